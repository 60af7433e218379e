"""`edgelstm train-teacher` end to end on the tiny config (two seeds, the window baseline),
and its one-line config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_lstm.checkpoint import load_checkpoint
from edge_lstm.metrics import compute_metrics
from tests.conftest import write_config

EDGELSTM = Path(sys.executable).parent / "edgelstm"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EDGELSTM), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def teacher_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real run of two seeds; one torch thread, which is fastest for a tiny model on a busy
    2-core box."""
    tmp = tmp_path_factory.mktemp("teacher")
    config = write_config(tmp / "test.yaml", tiny_data, train={"threads": 1, "seed": 4})
    out = tmp / "teacher"
    return out, _cli("train-teacher", "--config", str(config), "--out", str(out), "--seeds", "2")


def test_train_teacher_writes_checkpoint_and_reports(teacher_run, tiny_config) -> None:
    out, proc = teacher_run
    assert proc.returncode == 0, proc.stderr
    for name in ("model.pt", "model.json", "training_curve.png", "metrics.json", "seeds.json"):
        assert (out / name).is_file(), name
        assert str(out / name) in proc.stdout
    assert "test macro-F1" in proc.stdout

    report = json.loads((out / "metrics.json").read_text())
    for key in ("teacher", "baseline_window_gbm"):
        assert 0.0 <= report[key]["macro_f1"] <= 1.0
        assert report[key]["n"] == report["teacher"]["n"] > 0
    assert 1 <= len(report["training"]["history"]) <= tiny_config.train.epochs

    ckpt = load_checkpoint(out)
    meta = ckpt.meta
    assert meta.kind == "teacher" and meta.name == "teacher"
    assert (meta.window, meta.hop) == (tiny_config.data.window, tiny_config.data.stride)
    assert meta.classes[0] == "normal" and len(meta.features) == 24
    assert len(meta.normalization["mean"]) == len(meta.features)
    assert meta.config["teacher"] == tiny_config.teacher.model_dump(mode="json")
    assert meta.metrics["test"]["macro_f1"] == pytest.approx(report["teacher"]["macro_f1"])
    x = torch.zeros(2, meta.window, len(meta.features))
    assert ckpt.model(x).shape == (2, len(meta.classes))


def test_the_window_baseline_is_saved_scored_and_compared_honestly(
    teacher_run, tiny_config
) -> None:
    from edge_lstm.baselines import BASELINE_NAME, WindowBaseline
    from edge_lstm.data import prepare_data

    out, proc = teacher_run
    baseline = json.loads((out / "metrics.json").read_text())["baseline_window_gbm"]
    assert baseline["name"] == BASELINE_NAME
    assert set(baseline["latency_ms"]) == {"b1", "b256"} and baseline["size_bytes"] > 0
    saved = WindowBaseline.load(out / "window-baseline")
    assert saved.size_bytes == baseline["size_bytes"] and saved.seed == 4
    data = prepare_data(tiny_config)  # the run's data section
    again = compute_metrics(saved.predict_proba(data.test.x), data.test.y, data.classes)
    assert again["macro_f1"] == pytest.approx(baseline["macro_f1"])
    teacher = json.loads((out / "metrics.json").read_text())["teacher"]["macro_f1"]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("window baseline"))
    assert f"test macro-F1 {baseline['macro_f1']:.4f}" in line
    ahead = "teacher" if round(teacher, 4) > round(baseline["macro_f1"], 4) else "baseline"
    assert f"the {ahead} is ahead by" in line or "level" in line
    assert "worth" not in proc.stdout


def test_extra_seeds_are_trained_and_summarized(teacher_run) -> None:
    out, proc = teacher_run
    seeds = json.loads((out / "seeds.json").read_text())
    assert [row["seed"] for row in seeds["seeds"]] == [4, 5]
    assert [row["folder"] for row in seeds["seeds"]] == [".", "seeds/seed-5"]
    primary = json.loads((out / "metrics.json").read_text())["teacher"]
    assert seeds["seeds"][0]["macro_f1"] == pytest.approx(primary["macro_f1"])
    extra = load_checkpoint(out / "seeds" / "seed-5")
    assert extra.meta.config["train"]["seed"] == 5
    assert seeds["seeds"][1]["accuracy"] == pytest.approx(extra.meta.metrics["test"]["accuracy"])
    assert not (out / "seeds" / "seed-5" / "window-baseline").exists()
    summary = seeds["summary"]["macro_f1"]
    assert summary["n"] == 2
    assert summary["mean"] == pytest.approx(np.mean([r["macro_f1"] for r in seeds["seeds"]]))
    assert "seeds 4, 5: test macro-F1" in proc.stdout and "(2 seeds)" in proc.stdout


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, tiny_data: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", tiny_data, teacher={"hidden_sise": 8})
    proc = _cli("train-teacher", "--config", str(bad), "--out", str(tmp_path / "t"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "teacher.hidden_sise" in lines[0] and "bad.yaml" in lines[0]
    assert not (tmp_path / "t").exists()
