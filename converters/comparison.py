"""The comparison table (teacher, students, exported and quantized variants) as JSON + Markdown.

`distill` writes the first rows; `export`, `quantize` and `build-engine` add theirs through
`update_comparison`, which replaces a row with the same (model, runtime, precision) so re-running
a stage updates its row instead of duplicating it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from converters.errors import ConverterError
from edge_lstm.units import human_size

log = logging.getLogger(__name__)

SCHEMA = "edgelstm.comparison/1"
ROLES = ("teacher", "student", "baseline")


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


def _read(json_path: Path) -> tuple[list[ComparisonRow], dict[str, str]]:
    if not json_path.is_file():
        return [], {}
    try:
        raw = json.loads(json_path.read_text())
        names = {f.name for f in fields(ComparisonRow)}
        rows = [ComparisonRow(**{k: v for k, v in r.items() if k in names}) for r in raw["rows"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConverterError(
            f"{json_path}: not a comparison table ({exc}); delete it and re-run `edgelstm distill`"
        ) from None
    return rows, dict(raw.get("roles", {}))


def load_comparison(json_path: Path) -> list[ComparisonRow]:
    """The rows of comparison.json in table order (empty when the file does not exist)."""
    return _read(Path(json_path))[0]


def reset_comparison(json_path: Path) -> None:
    """Removes comparison.json/.md: a newly distilled student invalidates every earlier row."""
    json_path = Path(json_path)
    json_path.unlink(missing_ok=True)
    json_path.with_suffix(".md").unlink(missing_ok=True)


def update_comparison(
    json_path: Path, rows: list[ComparisonRow], roles: dict[str, str] | None = None
) -> None:
    """Adds or replaces rows (matched on model, runtime, precision); rewrites .json and .md.

    `roles` names the rows' models as "teacher", "student" (distilled) and "baseline"
    (hard labels), from which the Markdown headline ratios are computed.
    """
    json_path = Path(json_path)
    existing, known_roles = _read(json_path)
    if roles:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ConverterError(f"unknown comparison roles {sorted(unknown)}; use {ROLES}")
        known_roles.update(roles)
    by_key = {r.key: i for i, r in enumerate(existing)}
    for row in rows:
        if row.key in by_key:
            existing[by_key[row.key]] = row
        else:
            by_key[row.key] = len(existing)
            existing.append(row)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "schema": SCHEMA,
        "roles": known_roles,
        "summary": summarize(existing, known_roles),
        "rows": [asdict(r) for r in existing],
    }
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(json_path)
    json_path.with_suffix(".md").write_text(render_markdown(existing, known_roles))
    log.debug("comparison table %s now has %d rows", json_path, len(existing))


def _torch_row(rows: list[ComparisonRow], model: str | None) -> ComparisonRow | None:
    for row in rows:
        if row.model == model and row.runtime == "torch":
            return row
    return None


def _ratio(num: float | int | None, den: float | int | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num) / float(den)


def summarize(rows: list[ComparisonRow], roles: dict[str, str]) -> dict[str, Any]:
    """Headline figures: student vs teacher (F1 kept, size and latency ratios), KD vs hard."""
    teacher = _torch_row(rows, roles.get("teacher"))
    student = _torch_row(rows, roles.get("student"))
    baseline = _torch_row(rows, roles.get("baseline"))
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


def table_cells(row: ComparisonRow) -> list[str]:
    """The row as display strings, in HEADER order."""
    per_window = None if row.latency_ms_b256 is None else row.latency_ms_b256 * 1e3 / 256
    return [
        row.model,
        row.runtime,
        row.precision,
        f"{row.macro_f1:.4f}",
        f"{row.accuracy:.4f}",
        _fmt(row.parameters, ","),
        human_size(row.size_bytes),
        _fmt(row.latency_ms_b1, ".3f"),
        _fmt(row.latency_ms_b256, ".2f"),
        _fmt(per_window, ".1f"),
        row.notes,
    ]


def render_text(rows: list[ComparisonRow]) -> str:
    """A fixed-width table for the terminal."""
    cells = [list(HEADER)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _headline(summary: dict[str, Any]) -> list[str]:
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
    if summary.get("kd_minus_hard_macro_f1") is not None:
        lines.append(
            f"- distillation vs hard labels: {summary['kd_minus_hard_macro_f1']:+.4f} macro-F1"
        )
    return lines


def render_markdown(rows: list[ComparisonRow], roles: dict[str, str] | None = None) -> str:
    """The table as Markdown, with the headline ratios underneath when the roles are known."""
    lines = [
        "# Model comparison (test split)",
        "",
        "Latency: median ms per call, one intra-op thread, batch of 1 and of 256 windows.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    headline = _headline(summarize(rows, roles or {}))
    if headline:
        lines += ["", *headline]
    return "\n".join(lines) + "\n"
