"""The comparison table (teacher, students, the reference, exported and quantized variants) as
JSON + Markdown.

`distill` writes the first rows, the students' seed study (`converters.seed_study`) and the
roles; `export`, `quantize` and `build-engine` add theirs through `update_comparison`, which
replaces a row with the same (model, runtime, precision) so re-running a stage updates its row
instead of duplicating it, and keeps the roles and the seed study.

The headline under the Markdown table says no more than the figures: KD against hard labels
follows the seed study's interval, the student against the reference (a strong non-sequence
model) says which one is ahead and by how many points, and macro-F1 and accuracy are printed
with the decimals the students' seed-to-seed spread supports.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from converters.errors import ConverterError
from converters.seed_study import MOST_DECIMALS, SeedStudy
from edge_lstm.units import human_size

log = logging.getLogger(__name__)

SCHEMA = "edgelstm.comparison/1"
# baseline: the hard-label student; reference: the strong window-statistics model
ROLES = ("teacher", "student", "baseline", "reference")


@dataclass
class ComparisonRow:
    """One model under one runtime and precision, scored on the test split.

    Latencies are the median milliseconds of one call on a batch of 1 and of 256 windows
    (one intra-op thread); per-window cost at batch 256 is `latency_ms_b256 / 256`.
    """

    model: str
    runtime: str
    precision: str
    macro_f1: float
    accuracy: float
    parameters: int | None
    size_bytes: int
    latency_ms_b1: float | None
    latency_ms_b256: float | None
    notes: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.runtime, self.precision)


@dataclass
class ComparisonTable:
    """What comparison.json holds: the rows in table order, which model plays which role, and
    the students' seed study (None before distill wrote one)."""

    rows: list[ComparisonRow]
    roles: dict[str, str]
    seeds: SeedStudy | None = None

    def decimals(self) -> dict[str, int]:
        """Decimals of the macro-F1 and accuracy columns."""
        if self.seeds is None:
            return {"macro_f1": MOST_DECIMALS, "accuracy": MOST_DECIMALS}
        return {m: self.seeds.decimals(m) for m in ("macro_f1", "accuracy")}

    def headline(self) -> list[str]:
        """The Markdown bullet lines under the table: ratios, the reference, the seed study."""
        return _headline(self)

    def text(self) -> str:
        """The fixed-width table for the terminal, with the headline lines under it."""
        return "\n".join([render_text(self.rows, self.decimals()), *self.headline()])


def load_table(json_path: Path) -> ComparisonTable:
    """comparison.json as a ComparisonTable (empty when the file does not exist)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        return ComparisonTable([], {})
    try:
        raw = json.loads(json_path.read_text())
        names = {f.name for f in fields(ComparisonRow)}
        rows = [ComparisonRow(**{k: v for k, v in r.items() if k in names}) for r in raw["rows"]]
        seeds = SeedStudy.from_dict(raw["seeds"]) if raw.get("seeds") else None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConverterError(
            f"{json_path}: not a comparison table ({exc}); delete it and re-run `edgelstm distill`"
        ) from None
    return ComparisonTable(rows, dict(raw.get("roles", {})), seeds)


def load_comparison(json_path: Path) -> list[ComparisonRow]:
    """The rows of comparison.json in table order (empty when the file does not exist)."""
    return load_table(json_path).rows


def reset_comparison(json_path: Path) -> None:
    """Removes comparison.json/.md: a newly distilled student invalidates every earlier row."""
    json_path = Path(json_path)
    json_path.unlink(missing_ok=True)
    json_path.with_suffix(".md").unlink(missing_ok=True)


def update_comparison(
    json_path: Path,
    rows: list[ComparisonRow],
    roles: dict[str, str] | None = None,
    seeds: SeedStudy | None = None,
) -> None:
    """Adds or replaces rows (matched on model, runtime, precision); rewrites .json and .md.

    `roles` names the rows' models as "teacher", "student" (distilled), "baseline" (hard
    labels) and "reference" (the window-statistics model), from which the Markdown headline is
    computed; `seeds` replaces the students' seed study. Both are kept when not given.
    """
    json_path = Path(json_path)
    table = load_table(json_path)
    if roles:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ConverterError(f"unknown comparison roles {sorted(unknown)}; use {ROLES}")
        table.roles.update(roles)
    if seeds is not None:
        table.seeds = seeds
    by_key = {r.key: i for i, r in enumerate(table.rows)}
    for row in rows:
        if row.key in by_key:
            table.rows[by_key[row.key]] = row
        else:
            by_key[row.key] = len(table.rows)
            table.rows.append(row)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "roles": table.roles,
        "summary": summarize(table.rows, table.roles),
        "rows": [asdict(r) for r in table.rows],
    }
    if table.seeds is not None:
        payload["seeds"] = table.seeds.to_dict()
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(json_path)
    json_path.with_suffix(".md").write_text(render_markdown(table.rows, table.roles, table.seeds))
    log.debug("comparison table %s now has %d rows", json_path, len(table.rows))


def _torch_row(rows: list[ComparisonRow], model: str | None) -> ComparisonRow | None:
    """The role's own row: torch for the models distill trains, sklearn for the reference."""
    for row in rows:
        if row.model == model and row.runtime in ("torch", "sklearn"):
            return row
    return None


def _ratio(num: float | int | None, den: float | int | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num) / float(den)


def summarize(rows: list[ComparisonRow], roles: dict[str, str]) -> dict[str, Any]:
    """Headline figures: student vs teacher (F1 kept, size and latency ratios), KD vs hard (the
    primary seed's pair), student vs reference (points of macro-F1)."""
    teacher = _torch_row(rows, roles.get("teacher"))
    student = _torch_row(rows, roles.get("student"))
    baseline = _torch_row(rows, roles.get("baseline"))
    reference = _torch_row(rows, roles.get("reference"))
    out: dict[str, Any] = {}
    if teacher and student:
        out["student_f1_over_teacher_f1"] = _ratio(student.macro_f1, teacher.macro_f1)
        out["teacher_params_over_student_params"] = _ratio(teacher.parameters, student.parameters)
        out["teacher_latency_b1_over_student"] = _ratio(
            teacher.latency_ms_b1, student.latency_ms_b1
        )
        out["teacher_latency_b256_over_student"] = _ratio(
            teacher.latency_ms_b256, student.latency_ms_b256
        )
    if student and baseline:
        out["kd_minus_hard_macro_f1"] = student.macro_f1 - baseline.macro_f1
    if student and reference:
        out["student_minus_reference_macro_f1_points"] = 100 * (
            student.macro_f1 - reference.macro_f1
        )
    return out


def _fmt(value: float | int | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


HEADER = (
    "model",
    "runtime",
    "precision",
    "macro-F1",
    "accuracy",
    "parameters",
    "size",
    "b1 ms",
    "b256 ms",
    "b256 µs/window",
    "notes",
)


def table_cells(row: ComparisonRow, decimals: dict[str, int] | None = None) -> list[str]:
    """The row as display strings, in HEADER order; `decimals` of macro-F1 and accuracy
    (default four)."""
    per_window = None if row.latency_ms_b256 is None else row.latency_ms_b256 * 1e3 / 256
    d = decimals or {}
    return [
        row.model,
        row.runtime,
        row.precision,
        f"{row.macro_f1:.{d.get('macro_f1', MOST_DECIMALS)}f}",
        f"{row.accuracy:.{d.get('accuracy', MOST_DECIMALS)}f}",
        _fmt(row.parameters, ","),
        human_size(row.size_bytes),
        _fmt(row.latency_ms_b1, ".3f"),
        _fmt(row.latency_ms_b256, ".2f"),
        _fmt(per_window, ".1f"),
        row.notes,
    ]


def render_text(rows: list[ComparisonRow], decimals: dict[str, int] | None = None) -> str:
    """A fixed-width table for the terminal."""
    cells = [list(HEADER)] + [table_cells(r, decimals) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _reference_line(table: ComparisonTable) -> list[str]:
    """Student against the reference in points of macro-F1 on this split. It says no more than
    the difference: the seed spread covers the student's training, not the choice of test runs,
    so which model is better is left to evaluate's run-level intervals."""
    student = _torch_row(table.rows, table.roles.get("student"))
    reference = _torch_row(table.rows, table.roles.get("reference"))
    if student is None or reference is None:
        return []
    d = table.decimals()["macro_f1"]
    gap = 100 * (student.macro_f1 - reference.macro_f1)
    figures = f"{student.macro_f1:.{d}f} vs {reference.macro_f1:.{d}f}"
    if table.seeds is not None and len(table.seeds.seeds) > 1:
        figures += f"; {student.model} {table.seeds.summary('macro_f1').text()}"
    return [
        f"- {student.model} − the reference {reference.model}: {gap:+.{max(0, d - 2)}f} points "
        f"of macro-F1 on these test runs ({figures}); the test runs' own uncertainty is in "
        "`edgelstm evaluate` (run-level 95 % intervals)"
    ]


def _headline(table: ComparisonTable) -> list[str]:
    summary = summarize(table.rows, table.roles)
    lines = []
    if summary.get("student_f1_over_teacher_f1") is not None:
        lines.append(
            f"- student keeps {summary['student_f1_over_teacher_f1']:.3f}× the teacher's macro-F1"
        )
    if summary.get("teacher_params_over_student_params") is not None:
        lines.append(
            f"- {summary['teacher_params_over_student_params']:.1f}× fewer parameters "
            "than the teacher"
        )
    for batch in ("b1", "b256"):
        value = summary.get(f"teacher_latency_{batch}_over_student")
        if value is not None:
            lines.append(f"- torch latency at {batch}: teacher / student = {value:.1f}×")
    lines += _reference_line(table)
    if table.seeds is not None:
        lines += table.seeds.lines()
    elif summary.get("kd_minus_hard_macro_f1") is not None:  # a table without a seed study
        lines.append(
            f"- distillation vs hard labels: {summary['kd_minus_hard_macro_f1']:+.4f} macro-F1 "
            "(one seed: no spread measured, no verdict)"
        )
    return lines


def render_markdown(
    rows: list[ComparisonRow],
    roles: dict[str, str] | None = None,
    seeds: SeedStudy | None = None,
) -> str:
    """The table as Markdown, with the headline underneath when the roles are known."""
    table = ComparisonTable(rows, dict(roles or {}), seeds)
    lines = [
        "# Model comparison (test split)",
        "",
        "Latency: median ms per call, one intra-op thread, batch of 1 and of 256 windows.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(table_cells(r, table.decimals())) + " |" for r in rows]
    headline = table.headline()
    if headline:
        lines += ["", *headline]
    return "\n".join(lines) + "\n"
