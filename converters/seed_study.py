"""What the comparison table may claim about distillation: the KD and hard-label students
trained alike over several seeds, the spread of each and the paired difference KD − hard.

One seed's gap between two students can be smaller than either's seed-to-seed spread (issue
10: hard labels alone scored 0.970–0.993 over seeds 0–5), so the verdict follows a 95%
Student-t interval of the paired differences (same seed, same initial weights, same data
order), never one pair of numbers, and figures get the decimals that spread supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_lstm.uncertainty import SeedSummary, decimals_for, summarize_seeds

METRICS = ("macro_f1", "accuracy")
MOST_DECIMALS = 4  # without a measured spread, the table keeps its usual four

VERDICTS = {
    "kd_helps": "distillation earns its place: the 95% interval of KD − hard lies above 0",
    "not_shown": "distillation is not shown to help over hard labels with the same label "
    "smoothing: the 95% interval of KD − hard includes 0",
    "hard_better": "distillation is not shown to help over hard labels with the same label "
    "smoothing: hard labels score higher (the 95% interval of KD − hard lies below 0)",
    "one_seed": "one seed gives no spread, so no verdict on distillation: train more seeds "
    "(distill.seeds or --seeds, 3 or more)",
}


def _num(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}".replace("-", "−")


def _signed(value: float, decimals: int) -> str:
    return ("+" if value >= 0 else "") + _num(value, decimals)


def seeds_text(seeds: tuple[int, ...]) -> str:
    """`seed 0`, `seeds 0–2` (consecutive) or `seeds 0, 3, 7`."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(str(s) for s in seeds)


@dataclass(frozen=True)
class SeedStudy:
    """Test figures of the KD student (and of the hard-label control) for each seed, and the
    training budget both got (a TrainConfig as JSON: label_smoothing, epochs, patience, lr)."""

    seeds: tuple[int, ...]
    training: dict[str, Any]
    kd_model: str
    kd: dict[str, tuple[float, ...]]  # metric -> one test value per seed
    hard_model: str | None = None
    hard: dict[str, tuple[float, ...]] | None = None

    def summary(self, metric: str, control: bool = False) -> SeedSummary:
        """The KD student's (or, with `control`, the hard-label student's) figure over seeds."""
        values = self.hard if control else self.kd
        assert values is not None, "no hard-label student in this study"
        return summarize_seeds(values[metric])

    def difference(self, metric: str) -> SeedSummary | None:
        """KD − hard paired by seed; None without the hard-label control."""
        if self.hard is None:
            return None
        pairs = zip(self.kd[metric], self.hard[metric], strict=True)
        return summarize_seeds([kd - hard for kd, hard in pairs])

    def verdict(self) -> str | None:
        """A key of VERDICTS from the macro-F1 difference; None without the control."""
        diff = self.difference("macro_f1")
        if diff is None:
            return None
        if diff.low is None or diff.high is None:
            return "one_seed"
        if diff.low > 0:
            return "kd_helps"
        return "hard_better" if diff.high < 0 else "not_shown"

    def decimals(self, metric: str) -> int:
        """Decimals a `metric` figure of these students supports: the first significant digit
        of the larger seed-to-seed sd (the usual four when one seed measured no spread)."""
        if len(self.seeds) < 2:
            return MOST_DECIMALS
        sds = [self.summary(metric).sd]
        if self.hard is not None:
            sds.append(self.summary(metric, control=True).sd)
        return decimals_for(max(sds), MOST_DECIMALS)

    def budget_text(self) -> str:
        """e.g. `label smoothing 0.1, 40 epochs (patience 8), lr 0.005, seeds 0–2`."""
        t = self.training
        return (
            f"label smoothing {t['label_smoothing']:g}, {t['epochs']} epochs (patience "
            f"{t['patience']}), lr {t['lr']:g}, {seeds_text(self.seeds)}"
        )

    def lines(self) -> list[str]:
        """The Markdown headline lines: what both students got, each one's spread, KD − hard
        with its interval, and the verdict those numbers support."""
        kd_f1 = self.summary("macro_f1")
        if self.hard is None:
            return [f"- {self.kd_model} (KD) test macro-F1: {kd_f1.text()}"]
        lines = [
            f"- the KD and hard-label students trained alike: {self.budget_text()}",
            f"- test macro-F1: {self.kd_model} (KD) {kd_f1.text()}; {self.hard_model} "
            f"(hard labels) {self.summary('macro_f1', control=True).text()}",
        ]
        diff = self.difference("macro_f1")
        assert diff is not None
        if diff.low is None or diff.high is None:
            lines.append(
                f"- KD − hard: {_signed(diff.mean, MOST_DECIMALS)} macro-F1 on one seed "
                f"({seeds_text(self.seeds)})"
            )
        else:
            d = decimals_for(diff.sd, MOST_DECIMALS)
            lines.append(
                f"- KD − hard: {_signed(diff.mean, d)} ± {_num(diff.sd, d)} over {diff.n} seeds "
                f"({diff.level:.0%} CI {_num(diff.low, d)}–{_num(diff.high, d)})"
            )
        verdict = self.verdict()
        assert verdict is not None
        return [*lines, f"- verdict: {VERDICTS[verdict]}"]

    def to_dict(self) -> dict[str, Any]:
        """comparison.json's `seeds` section: per-model summaries (the values included, from
        which `from_dict` rebuilds the study), the paired difference and the verdict."""
        models: dict[str, Any] = {
            self.kd_model: {"role": "student", **{m: self.summary(m).to_dict() for m in METRICS}}
        }
        out: dict[str, Any] = {"seeds": list(self.seeds), "training": self.training}
        if self.hard is not None and self.hard_model is not None:
            models[self.hard_model] = {
                "role": "baseline",
                **{m: self.summary(m, control=True).to_dict() for m in METRICS},
            }
            out["kd_minus_hard"] = {
                m: diff.to_dict() for m in METRICS if (diff := self.difference(m)) is not None
            }
            out["verdict"] = self.verdict()
        out["models"] = models
        out["decimals"] = {m: self.decimals(m) for m in METRICS}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SeedStudy:
        """The study `to_dict` wrote (KeyError/TypeError on anything else)."""
        by_role = {entry["role"]: (name, entry) for name, entry in raw["models"].items()}
        kd_model, kd = by_role["student"]
        hard_model, hard = by_role.get("baseline", (None, None))

        def values(entry: dict[str, Any]) -> dict[str, tuple[float, ...]]:
            return {m: tuple(float(v) for v in entry[m]["values"]) for m in METRICS}

        return cls(
            seeds=tuple(int(s) for s in raw["seeds"]),
            training=dict(raw["training"]),
            kd_model=kd_model,
            kd=values(kd),
            hard_model=hard_model,
            hard=None if hard is None else values(hard),
        )
