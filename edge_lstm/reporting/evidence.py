"""report.md's evidence section: every model beside the window-statistics baseline on the same
test runs, with run-level intervals, onset against steady-state windows, calibration and the
offline detection figures — read from the metrics.json files `edgelstm evaluate` wrote.

The verdict sentences are derived from the intervals, so the text never says more than the
table under it, plus the paired model − baseline interval over the same run resamples where
evaluate wrote one (`vs_baseline`; older metrics.json files lack it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_lstm.reporting.evaluate import default_out_dir
from edge_lstm.reporting.markdown import markdown_table, num
from edge_lstm.reporting.sensor_time import SECONDS, TimeUnit
from edge_lstm.uncertainty import Interval, decimals_for


@dataclass
class Scored:
    """One model's evaluate figures (a metrics.json, or the baseline inside one)."""

    label: str
    figures: dict[str, Any]

    def interval(self, *keys: str) -> Interval | None:
        node: Any = self.figures
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return Interval(**node) if isinstance(node, dict) else None


def read_scored(label: str, path: Path) -> Scored | None:
    """The figures of `path` (a metrics.json), or None when evaluate has not written it."""
    if not path.is_file():
        return None
    return Scored(label, json.loads(path.read_text()))


def demo_models(runs_dir: Path, manifest: dict[str, Any], served: str) -> list[Scored]:
    """The evaluate results the demo writes: the teacher, the exported fp32 step graph (the
    student as exported) and the artifact the gateway served; those not written are left out."""
    deploy, artifacts = runs_dir / "deploy", manifest["artifacts"]
    wanted = [("teacher", runs_dir / "teacher" / "eval-test" / "metrics.json")]
    for name, label in (("step", "student, fp32 step graph"), (served, f"served: {served}")):
        if name in artifacts and (name != served or served != "step"):
            file = deploy / artifacts[name]["file"]
            wanted.append((label, default_out_dir(file, "test") / "metrics.json"))
    return [s for label, path in wanted if (s := read_scored(label, path)) is not None]


def hop_note(models: list[Scored], unit: TimeUnit = SECONDS) -> str:
    """The debounce rule and hop the offline detection used, from the first model's figures
    (the hop in `unit`)."""
    d = next((m.figures["detection"] for m in models if m.figures.get("detection")), None)
    if d is None:
        return "no detection figures"
    rule = d["debounce"]
    return (
        f"k = {rule['k']} agreeing windows at probability ≥ {rule['threshold']:g}, one window "
        f"every {d['hop_readings']} readings = {unit.value(d['hop_s'], 'g')} {unit.symbol}"
    )


def baseline_of(scored: Scored | None) -> Scored | None:
    """The window baseline evaluate scored beside a model, if it did."""
    if scored is None or not scored.figures.get("baseline"):
        return None
    base = scored.figures["baseline"]
    return Scored(f"{base['name']} (baseline)", base)


def with_baseline(models: list[Scored]) -> list[Scored]:
    """The models and, last, the baseline the first of them was scored beside (if any)."""
    base = next((b for m in models if (b := baseline_of(m)) is not None), None)
    return [*models, *([base] if base else [])]


DETECTION_KEYS = ("fault_runs", "detected_runs", "median_delay_s", "false_alarms_per_hour")


def evidence_json(models: list[Scored]) -> dict[str, Any]:
    """report.json's evidence: each model's intervals, onset/steady accuracy, detection
    headline, calibration and paired differences from the baseline, keyed by the report's
    label."""
    out = {}
    for s in with_baseline(models):
        f = s.figures
        out[s.label] = {
            "intervals": f.get("intervals"),
            "onset_accuracy": (f.get("onset") or {}).get("accuracy"),
            "steady_accuracy": (f.get("steady") or {}).get("accuracy"),
            "detection": {k: (f.get("detection") or {}).get(k) for k in DETECTION_KEYS},
            "calibration": f.get("calibration"),
            "vs_baseline": f.get("vs_baseline"),
        }
    return out


def cell(interval: Interval | None) -> str:
    """`0.993 [0.978, 0.997]`, decimals from the interval's half-width."""
    if interval is None:
        return "–"
    d = decimals_for((interval.high - interval.low) / 2, most=3, least=2)
    return f"{interval.estimate:.{d}f} [{interval.low:.{d}f}, {interval.high:.{d}f}]"


def _calibration(figures: dict[str, Any]) -> str:
    cal = figures.get("calibration") or {}
    if "before" in cal:
        t = cal.get("temperature", 1.0)
        if t == 1.0:
            return f"{num(cal['before']['ece'], '.3f')} (T = 1)"
        before, after = num(cal["before"]["ece"], ".3f"), num(cal["after"]["ece"], ".3f")
        return f"{before} → {after} (T = {t:.2f})"
    return num(cal.get("ece"), ".3f")


def _brier(figures: dict[str, Any]) -> str:
    cal = figures.get("calibration") or {}
    return num((cal.get("after") or cal).get("brier"), ".3f")


def _score_row(s: Scored) -> list[str]:
    f = s.figures
    onset, steady = f.get("onset") or {}, f.get("steady") or {}
    return [
        s.label,
        str(f["n"]),
        cell(s.interval("intervals", "macro_f1")),
        cell(s.interval("intervals", "accuracy")),
        f"{cell(s.interval('onset', 'accuracy'))} ({onset.get('windows', 0)})",
        f"{cell(s.interval('steady', 'accuracy'))} ({steady.get('windows', 0)})",
        _calibration(f),
        _brier(f),
    ]


def _detection_row(s: Scored, unit: TimeUnit) -> list[str]:
    d = s.figures.get("detection") or {}
    return [
        s.label,
        f"{d.get('detected_runs', 0)} / {d.get('fault_runs', 0)}",
        unit.value(d.get("median_delay_s")),
        str(d.get("false_alarms", 0)),
        num(d.get("normal_hours"), ".2f"),
        num(d.get("false_alarms_per_hour"), ".2f"),
    ]


# what a deep model must show to earn its place beside the baseline: this many points ahead,
# with the intervals apart
TARGET_POINTS = 2.0


# the figure in metrics.json's "vs_baseline" that pairs each compared figure with the baseline's
PAIRED = {
    ("intervals", "macro_f1"): "macro_f1",
    ("intervals", "accuracy"): "accuracy",
    ("onset", "accuracy"): "onset_accuracy",
}


def paired_clauses(paired: Interval | None) -> tuple[str, str, bool]:
    """The paired interval of a difference in points, what it shows about 0, and whether it
    excludes 0 (empty and False without one)."""
    if paired is None:
        return "", "", False
    span = (
        f" (paired {paired.level * 100:g} % interval {paired.low * 100:+.1f} to "
        f"{paired.high * 100:+.1f} over the same runs)"
    )
    if paired.low > 0:
        return span, "; the paired difference is above 0", True
    if paired.high < 0:
        return span, "; the paired difference is below 0", True
    return span, "; the paired interval includes 0", False


def compare(deep: Scored, base: Scored, keys: tuple[str, str], what: str) -> str:
    """One sentence comparing `deep` with the baseline on `keys`, as the intervals allow, and
    whether that meets the target (TARGET_POINTS ahead, intervals apart), with the paired
    interval of the difference when evaluate wrote it."""
    a, b = deep.interval(*keys), base.interval(*keys)
    if a is None or b is None:
        return ""
    paired = deep.interval("vs_baseline", PAIRED[keys]) if keys in PAIRED else None
    span, shows, excludes_zero = paired_clauses(paired)
    gap = (a.estimate - b.estimate) * 100
    head = f"{what}: {deep.label} − baseline = {gap:+.1f} points{span}"
    met = a.low > b.high and gap >= TARGET_POINTS
    target = (
        f"target (≥ {TARGET_POINTS:g} points ahead, intervals apart) {'met' if met else 'missed'}"
    )
    if a.low > b.high:
        verdict = f"intervals apart: {deep.label} is ahead on these runs"
    elif b.low > a.high:
        verdict = "intervals apart: the baseline is ahead on these runs"
    elif excludes_zero:
        verdict = "intervals overlap"
    else:
        verdict = "intervals overlap: neither is shown to be better on these runs"
    return f"{head}, {verdict}{shows}; {target}"


def compare_detection(deep: Scored, base: Scored, unit: TimeUnit) -> str:
    """Whether `deep` detects faults sooner than the baseline with no more false alarms per
    hour of normal readings (one run's debounce each, so a point figure, no interval)."""
    a, b = deep.figures.get("detection") or {}, base.figures.get("detection") or {}
    da, db = a.get("median_delay_s"), b.get("median_delay_s")
    if da is None or db is None:
        return ""
    fa, fb = a.get("false_alarms_per_hour") or 0.0, b.get("false_alarms_per_hour") or 0.0
    met = da < db and fa <= fb
    return (
        f"Detection: {deep.label} median delay {unit.value(da)} {unit.symbol} against the "
        f"baseline's {unit.value(db)} {unit.symbol}, false alarms {fa:.2f} against {fb:.2f} per "
        f"h; target (sooner, no more false alarms) {'met' if met else 'missed'}"
    )


VERDICTS = ((("intervals", "macro_f1"), "Macro-F1"), (("onset", "accuracy"), "Onset accuracy"))


def evidence_section(models: list[Scored], unit: TimeUnit = SECONDS) -> list[str]:
    """Section 1b: the evidence table, the detection table and the verdicts under them (delays
    and the hop in `unit` of sensor time)."""
    rows = with_baseline(models)
    base = rows[-1] if len(rows) > len(models) else None
    if not rows:
        return []
    lines = [
        "### 1b. How far the figures can be trusted",
        "",
        "Each model on the same held-out test runs, figures with 95 % intervals from a "
        "bootstrap over whole runs (stratified by class; windows of one run overlap and are "
        "not independent samples). Onset windows straddle a label change; steady windows do "
        "not. ECE: expected calibration error (15 bins of the top probability), before → after "
        "the temperature fitted on the validation split at export, which the gateway applies; "
        "Brier score after it.",
        "",
        markdown_table(
            [
                "model",
                "windows",
                "macro-F1",
                "accuracy",
                "onset accuracy (windows)",
                "steady accuracy (windows)",
                "ECE",
                "Brier",
            ],
            [_score_row(s) for s in rows],
        ),
        "",
        f"Offline detection: each run's windows in time order through the gateway's debounce "
        f"rule ({hop_note(models, unit)}). Delay: fault onset → end of the window that raised "
        "the right class. False alarms: alerts on normal runs or before the onset, per hour of "
        "normal readings.",
        "",
        markdown_table(
            [
                "model",
                "faults detected",
                f"median delay {unit.symbol}",
                "false alarms",
                "normal h",
                "per h",
            ],
            [_detection_row(s, unit) for s in rows],
        ),
    ]
    if base is not None:
        verdicts = [
            v
            for deep in models
            for v in [
                *(compare(deep, base, keys, what) for keys, what in VERDICTS),
                compare_detection(deep, base, unit),
            ]
            if v
        ]
        lines += ["", *[f"- {v}." for v in verdicts]]
    lines.append("")
    return lines
