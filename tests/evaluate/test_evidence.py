"""The report's evidence section: which evaluate files it reads, and verdicts that follow the
intervals."""

from __future__ import annotations

import json
from pathlib import Path

from edge_lstm.reporting.evidence import (
    Scored,
    cell,
    compare,
    compare_detection,
    demo_models,
    evidence_json,
    evidence_section,
)
from edge_lstm.reporting.sensor_time import SECONDS
from edge_lstm.uncertainty import Interval


def _interval(estimate: float, low: float, high: float) -> dict:
    return Interval(estimate, low, high, units=27).to_dict()


def _figures(f1: tuple[float, float, float], onset: tuple[float, float, float]) -> dict:
    return {
        "n": 1485,
        "intervals": {"macro_f1": _interval(*f1), "accuracy": _interval(*f1)},
        "onset": {"windows": 133, "accuracy": _interval(*onset)},
        "steady": {"windows": 1352, "accuracy": _interval(0.99, 0.98, 1.0)},
        "calibration": {
            "temperature": 0.59,
            "before": {"ece": 0.07, "brier": 0.018},
            "after": {"ece": 0.004, "brier": 0.013},
        },
        "detection": {
            "debounce": {"k": 3, "threshold": 0.6},
            "hop_readings": 10,
            "hop_s": 1.0,
            "fault_runs": 24,
            "detected_runs": 23,
            "median_delay_s": 3.05,
            "false_alarms": 1,
            "normal_hours": 0.5,
            "false_alarms_per_hour": 2.0,
        },
    }


def _baseline(f1: tuple[float, float, float]) -> dict:
    base = _figures(f1, (0.88, 0.80, 0.95))
    base["calibration"] = {"ece": 0.008, "brier": 0.019}
    return {"name": "gbm-window-stats", **base}


def test_verdict_says_ahead_only_when_the_intervals_are_apart() -> None:
    base = Scored("gbm", _figures((0.90, 0.88, 0.92), (0.8, 0.7, 0.9)))
    ahead = Scored("teacher", _figures((0.96, 0.94, 0.98), (0.9, 0.85, 0.95)))
    close = Scored("student", _figures((0.91, 0.89, 0.95), (0.9, 0.85, 0.95)))
    behind = Scored("tiny", _figures((0.80, 0.76, 0.85), (0.7, 0.6, 0.8)))
    keys = ("intervals", "macro_f1")
    assert "intervals apart: teacher is ahead" in compare(ahead, base, keys, "Macro-F1")
    assert "+6.0 points" in compare(ahead, base, keys, "Macro-F1")
    assert "intervals overlap: neither" in compare(close, base, keys, "Macro-F1")
    assert "the baseline is ahead" in compare(behind, base, keys, "Macro-F1")
    assert compare(ahead, base, keys, "Macro-F1").endswith("intervals apart) met")
    for other in (close, behind):
        assert compare(other, base, keys, "Macro-F1").endswith("intervals apart) missed")
    # intervals apart but less than 2 points ahead: ahead, and still short of the target
    narrow = Scored("narrow", _figures((0.935, 0.925, 0.94), (0.9, 0.85, 0.95)))
    tight_base = Scored("gbm", _figures((0.92, 0.915, 0.922), (0.8, 0.7, 0.9)))
    verdict = compare(narrow, tight_base, keys, "Macro-F1")
    assert "narrow is ahead" in verdict and verdict.endswith("missed")


def _paired(estimate: float, low: float, high: float) -> dict:
    """A vs_baseline block: the same paired difference for every figure."""
    diff = _interval(estimate, low, high)
    return {"macro_f1": diff, "accuracy": diff, "onset_accuracy": diff}


def test_verdict_quotes_the_paired_interval_when_evaluate_wrote_one() -> None:
    base = Scored("gbm", _figures((0.90, 0.87, 0.93), (0.8, 0.7, 0.9)))
    student = Scored("student", _figures((0.941, 0.90, 0.97), (0.85, 0.75, 0.92)))
    keys = ("intervals", "macro_f1")
    old = compare(student, base, keys, "Macro-F1")  # a metrics.json from before vs_baseline
    assert old == (
        "Macro-F1: student − baseline = +4.1 points, intervals overlap: neither is shown to be "
        "better on these runs; target (≥ 2 points ahead, intervals apart) missed"
    )
    student.figures["vs_baseline"] = _paired(0.041, 0.010, 0.073)
    assert compare(student, base, keys, "Macro-F1") == (
        "Macro-F1: student − baseline = +4.1 points (paired 95 % interval +1.0 to +7.3 over the "
        "same runs), intervals overlap; the paired difference is above 0; target (≥ 2 points "
        "ahead, intervals apart) missed"
    )
    student.figures["vs_baseline"] = _paired(0.041, -0.005, 0.08)
    verdict = compare(student, base, keys, "Macro-F1")
    assert "(paired 95 % interval -0.5 to +8.0 over the same runs)" in verdict
    assert "neither is shown to be better on these runs; the paired interval includes 0" in verdict
    student.figures["vs_baseline"] = _paired(-0.03, -0.05, -0.01)
    assert "the paired difference is below 0; target" in compare(student, base, keys, "Macro-F1")
    # onset accuracy is paired with vs_baseline's onset_accuracy
    student.figures["vs_baseline"]["onset_accuracy"] = _interval(0.05, 0.02, 0.09)
    onset = compare(student, base, ("onset", "accuracy"), "Onset accuracy")
    assert "(paired 95 % interval +2.0 to +9.0" in onset and "above 0" in onset


def test_detection_target_needs_sooner_alerts_and_no_more_false_alarms() -> None:
    base = Scored("gbm", _figures((0.9, 0.88, 0.92), (0.8, 0.7, 0.9)))
    sooner = Scored("student", _figures((0.9, 0.88, 0.92), (0.8, 0.7, 0.9)))
    sooner.figures["detection"]["median_delay_s"] = 2.0
    assert compare_detection(sooner, base, SECONDS).endswith("met")
    sooner.figures["detection"]["false_alarms_per_hour"] = 3.0
    assert compare_detection(sooner, base, SECONDS).endswith("missed")
    same = Scored("same", _figures((0.9, 0.88, 0.92), (0.8, 0.7, 0.9)))
    text = compare_detection(same, base, SECONDS)
    assert "median delay 3.0 s against the baseline's 3.0 s" in text and text.endswith("missed")


def test_cells_print_the_decimals_the_interval_supports() -> None:
    assert cell(Interval(0.9860, 0.975, 0.993)) == "0.986 [0.975, 0.993]"
    assert cell(Interval(0.95, 0.85, 0.99)) == "0.95 [0.85, 0.99]"
    assert cell(Interval(0.99312, 0.9925, 0.9937)) == "0.993 [0.993, 0.994]"
    assert cell(None) == "–"


def test_section_shows_every_model_beside_the_baseline(tmp_path: Path) -> None:
    teacher = _figures((0.986, 0.975, 0.993), (0.92, 0.87, 0.96))
    teacher["baseline"] = _baseline((0.977, 0.96, 0.99))
    models = [Scored("teacher", teacher)]
    text = "\n".join(evidence_section(models))
    assert "| teacher | 1485 | 0.986 [0.975, 0.993]" in text
    assert "| gbm-window-stats (baseline) |" in text
    assert "0.070 → 0.004 (T = 0.59)" in text
    assert "| teacher | 23 / 24 | 3.0 | 1 | 0.50 | 2.00 |" in text
    assert "k = 3 agreeing windows at probability ≥ 0.6" in text
    assert "Macro-F1: teacher − baseline = +0.9 points, intervals overlap" in text
    figures = evidence_json(models)
    assert list(figures) == ["teacher", "gbm-window-stats (baseline)"]
    assert figures["teacher"]["detection"]["false_alarms_per_hour"] == 2.0
    assert figures["teacher"]["vs_baseline"] is None  # written before evaluate paired them
    teacher["vs_baseline"] = _paired(0.009, 0.002, 0.016)
    text = "\n".join(evidence_section(models))
    assert "+0.9 points (paired 95 % interval +0.2 to +1.6 over the same runs)" in text
    assert evidence_json(models)["teacher"]["vs_baseline"] == teacher["vs_baseline"]


def test_demo_models_reads_what_the_demo_evaluated(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    for folder in (tmp_path / "teacher" / "eval-test", deploy / "eval-test-step.int8-static"):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(_figures((0.9, 0.8, 1.0), (0.9, 0.8, 1))))
    manifest = {
        "artifacts": {
            "step": {"file": "step.onnx"},
            "step.int8-static": {"file": "step.int8-static.onnx"},
        }
    }
    models = demo_models(tmp_path, manifest, "step.int8-static")
    assert [m.label for m in models] == ["teacher", "served: step.int8-static"]  # no step eval
    assert evidence_section([]) == []
