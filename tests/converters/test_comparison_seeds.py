"""The seed study and the reference row in the comparison table: the headline says no more than
the figures (KD − hard with its interval, a verdict that follows it, who is ahead of the
reference) and the table prints the decimals the seed-to-seed spread supports."""

from __future__ import annotations

import json

import pytest

from converters.comparison import ComparisonRow, load_table, update_comparison
from converters.seed_study import VERDICTS, SeedStudy, seeds_text
from edge_lstm.uncertainty import summarize_seeds

TRAINING = {"label_smoothing": 0.1, "epochs": 40, "patience": 8, "lr": 0.005, "seed": 0}
ISSUE_KD = (0.9930, 0.9916, 0.9923)  # issue 10: KD vs hard labels with the same smoothing
ISSUE_HARD = (0.9915, 0.9929, 0.9917)


def _study(kd: tuple[float, ...], hard: tuple[float, ...] | None) -> SeedStudy:
    seeds = tuple(range(len(kd)))
    return SeedStudy(
        seeds=seeds,
        training=TRAINING,
        kd_model="s",
        kd={"macro_f1": kd, "accuracy": kd},
        hard_model=None if hard is None else "s-hard",
        hard=None if hard is None else {"macro_f1": hard, "accuracy": hard},
    )


def _rows(student: float, hard: float, reference: float) -> list[ComparisonRow]:
    return [
        ComparisonRow("teacher", "torch", "fp32", 0.995, 0.996, 20000, 80000, 0.5, 12.0),
        ComparisonRow("s", "torch", "fp32", student, student, 1000, 4096, 0.05, 1.0),
        ComparisonRow("s-hard", "torch", "fp32", hard, hard, 1000, 4096, 0.05, 1.0),
        ComparisonRow("gbm", "sklearn", "fp64", reference, reference, 5000, 9000, 2.0, 40.0),
    ]


ROLES = {"teacher": "teacher", "student": "s", "baseline": "s-hard", "reference": "gbm"}


def test_the_issue_figures_do_not_earn_a_verdict_for_distillation() -> None:
    study = _study(ISSUE_KD, ISSUE_HARD)
    diff = study.difference("macro_f1")
    expected = summarize_seeds([k - h for k, h in zip(ISSUE_KD, ISSUE_HARD, strict=True)])
    assert diff == expected and diff.low < 0 < diff.high
    assert study.verdict() == "not_shown"
    lines = study.lines()
    assert lines[0] == (
        "- the KD and hard-label students trained alike: label smoothing 0.1, 40 epochs "
        "(patience 8), lr 0.005, seeds 0–2"
    )
    # sd of the differences 0.0014 -> three decimals; the CI printed with a minus sign
    assert "- KD − hard: +0.000 ± 0.001 over 3 seeds (95% CI −0.003–0.004)" in lines
    assert lines[-1] == f"- verdict: {VERDICTS['not_shown']}"
    assert "not shown to help over hard labels with the same label smoothing" in lines[-1]


@pytest.mark.parametrize(
    ("kd", "hard", "verdict"),
    [
        ((0.990, 0.992, 0.991), (0.980, 0.981, 0.979), "kd_helps"),
        ((0.970, 0.971, 0.969), (0.980, 0.982, 0.981), "hard_better"),
        ((0.990,), (0.980,), "one_seed"),
    ],
)
def test_the_verdict_follows_the_interval(kd, hard, verdict) -> None:
    study = _study(kd, hard)
    assert study.verdict() == verdict
    assert study.lines()[-1] == f"- verdict: {VERDICTS[verdict]}"
    if verdict == "one_seed":
        assert "- KD − hard: +0.0100 macro-F1 on one seed (seed 0)" in study.lines()
        assert "one seed gives no spread" in study.lines()[-1]


def test_without_the_control_there_is_no_verdict() -> None:
    study = _study((0.99, 0.98), None)
    assert study.verdict() is None and study.difference("macro_f1") is None
    assert study.lines() == ["- s (KD) test macro-F1: 0.985 ± 0.007 (2 seeds)"]
    assert "kd_minus_hard" not in study.to_dict()


def test_decimals_follow_the_larger_spread() -> None:
    assert _study((0.99, 0.991, 0.989), (0.95, 0.99, 0.97)).decimals("macro_f1") == 2
    assert _study((0.99, 0.993, 0.987), (0.9901, 0.9899, 0.99)).decimals("macro_f1") == 3
    assert _study((0.99,), (0.98,)).decimals("macro_f1") == 4  # no spread measured


def test_seeds_text() -> None:
    assert seeds_text((0,)) == "seed 0"
    assert seeds_text((3, 4, 5)) == "seeds 3–5"
    assert seeds_text((0, 2)) == "seeds 0, 2"


def test_the_study_survives_later_rows_and_sets_the_table_precision(tmp_path) -> None:
    path = tmp_path / "comparison.json"
    study = _study((0.991, 0.985, 0.988), (0.975, 0.99, 0.98))
    update_comparison(path, _rows(0.991, 0.975, 0.99), ROLES, study)
    later = ComparisonRow("s", "onnxruntime", "int8-static", 0.9871, 0.9872, None, 2048, None, None)
    update_comparison(path, [later])  # what export/quantize do: no roles, no study

    table = load_table(path)
    assert table.seeds == study and table.roles == ROLES
    raw = json.loads(path.read_text())
    seeds = raw["seeds"]
    assert seeds["seeds"] == [0, 1, 2] and seeds["training"] == TRAINING
    assert seeds["models"]["s"]["role"] == "student"
    kd_f1 = json.loads(json.dumps(summarize_seeds(study.kd["macro_f1"]).to_dict()))
    assert seeds["models"]["s"]["macro_f1"] == kd_f1
    assert seeds["models"]["s-hard"]["accuracy"]["values"] == [0.975, 0.99, 0.98]
    diff = summarize_seeds([0.991 - 0.975, 0.985 - 0.99, 0.988 - 0.98]).to_dict()
    assert seeds["kd_minus_hard"]["macro_f1"] == json.loads(json.dumps(diff))
    assert seeds["verdict"] == "not_shown"
    assert seeds["decimals"] == {"macro_f1": 3, "accuracy": 3}  # larger sd 0.0076 -> 0.00x

    md = path.with_suffix(".md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines() if "|" in line}
    assert rows["teacher"][3:5] == ["0.995", "0.996"]
    assert rows["gbm"][3] == "0.990" and rows["gbm"][5] == "5,000"
    assert "| s | onnxruntime | int8-static | 0.987 | 0.987 |" in md
    # the differences' sd 0.011 -> two decimals
    assert "- KD − hard: +0.01 ± 0.01 over 3 seeds (95% CI −0.02–0.03)" in md
    assert f"- verdict: {VERDICTS['not_shown']}" in md
    text = table.text().splitlines()
    assert text[2].split()[:5] == ["teacher", "torch", "fp32", "0.995", "0.996"]
    assert text[-1] == f"- verdict: {VERDICTS['not_shown']}"  # the terminal gets the headline


TAIL = (
    " points of macro-F1 on these test runs ({}); the test runs' own uncertainty is in "
    "`edgelstm evaluate` (run-level 95 % intervals)"
)


@pytest.mark.parametrize(
    ("student", "reference", "line"),
    [
        (
            0.9912,
            0.9801,
            "- s − the reference gbm: +1.11" + TAIL.format("0.9912 vs 0.9801"),
        ),
        (
            0.9801,
            0.9912,
            "- s − the reference gbm: -1.11" + TAIL.format("0.9801 vs 0.9912"),
        ),
        (0.99101, 0.99099, "- s − the reference gbm: +0.00" + TAIL.format("0.9910 vs 0.9910")),
    ],
)
def test_the_reference_line_gives_the_difference_and_no_verdict(
    tmp_path, student, reference, line
) -> None:
    path = tmp_path / "comparison.json"
    update_comparison(path, _rows(student, 0.97, reference), ROLES)
    md = path.with_suffix(".md").read_text()
    assert line in md.splitlines()
    summary = json.loads(path.read_text())["summary"]
    assert summary["student_minus_reference_macro_f1_points"] == pytest.approx(
        100 * (student - reference)
    )


def test_the_reference_line_quotes_the_students_spread(tmp_path) -> None:
    path = tmp_path / "comparison.json"
    study = _study((0.991, 0.985, 0.988), (0.975, 0.99, 0.98))
    update_comparison(path, _rows(0.991, 0.975, 0.95), ROLES, study)
    md = path.with_suffix(".md").read_text()
    line = "- s − the reference gbm: +4.1" + TAIL.format(
        "0.991 vs 0.950; s 0.988 ± 0.003 (3 seeds)"
    )
    assert line in md.splitlines()
