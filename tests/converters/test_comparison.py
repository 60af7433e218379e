"""The comparison table: rows replaced by key, every row and column in JSON and Markdown."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from converters.comparison import (
    HEADER,
    ComparisonRow,
    load_comparison,
    render_text,
    update_comparison,
)
from converters.errors import ConverterError


def _row(model: str, runtime: str = "torch", precision: str = "fp32", f1: float = 0.9):
    return ComparisonRow(model, runtime, precision, f1, 0.95, 1000, 4096, 0.5, 12.0, "n")


def test_update_adds_and_replaces_rows(tmp_path) -> None:
    path = tmp_path / "comparison.json"
    roles = {"teacher": "teacher", "student": "s", "baseline": "s-hard"}
    update_comparison(
        path,
        [
            _row("teacher", f1=0.96),
            ComparisonRow("s", "torch", "fp32", 0.95, 0.96, 50, 1024, 0.05, 1.0),
            _row("s-hard", f1=0.93),
        ],
        roles,
    )
    update_comparison(path, [_row("s", "onnxruntime", "int8-dynamic", f1=0.94)])
    update_comparison(path, [_row("s-hard", f1=0.92)])

    rows = load_comparison(path)
    assert [r.key for r in rows] == [
        ("teacher", "torch", "fp32"),
        ("s", "torch", "fp32"),
        ("s-hard", "torch", "fp32"),
        ("s", "onnxruntime", "int8-dynamic"),
    ]
    assert rows[2].macro_f1 == 0.92

    raw = json.loads(path.read_text())
    assert raw["roles"] == roles
    assert all(set(r) == {f.name for f in fields(ComparisonRow)} for r in raw["rows"])
    summary = raw["summary"]
    assert summary["teacher_params_over_student_params"] == pytest.approx(20.0)
    assert summary["student_f1_over_teacher_f1"] == pytest.approx(0.95 / 0.96)
    assert summary["teacher_latency_b1_over_student"] == pytest.approx(10.0)
    assert summary["kd_minus_hard_macro_f1"] == pytest.approx(0.95 - 0.92)

    md = path.with_suffix(".md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| " + " | ".join(HEADER) + " |"
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == len(HEADER) + 1 for line in table)
    assert "int8-dynamic" in md and "20.0× fewer parameters" in md

    assert "| 4.0 KiB |" in md and "| 1.0 KiB |" in md  # sizes in binary units

    text = render_text(rows)
    assert len(text.splitlines()) == 2 + len(rows)


def test_unknown_role_and_damaged_file_are_refused(tmp_path) -> None:
    path = tmp_path / "comparison.json"
    with pytest.raises(ConverterError, match="roles"):
        update_comparison(path, [_row("a")], {"champion": "a"})
    path.write_text("{not json")
    with pytest.raises(ConverterError, match="not a comparison table"):
        load_comparison(path)
