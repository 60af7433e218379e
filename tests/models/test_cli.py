"""`edgelstm train-teacher` end to end on the tiny config, and its one-line config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_lstm.checkpoint import load_checkpoint
from tests.conftest import write_config

EDGELSTM = Path(sys.executable).parent / "edgelstm"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EDGELSTM), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def teacher_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real run; one torch thread, which is fastest for a tiny model on a busy 2-core box."""
    tmp = tmp_path_factory.mktemp("teacher")
    config = write_config(tmp / "test.yaml", tiny_data, train={"threads": 1})
    out = tmp / "teacher"
    return out, _cli("train-teacher", "--config", str(config), "--out", str(out))


def test_train_teacher_writes_checkpoint_and_reports(teacher_run, tiny_config) -> None:
    out, proc = teacher_run
    assert proc.returncode == 0, proc.stderr
    for name in ("model.pt", "model.json", "training_curve.png", "metrics.json"):
        assert (out / name).is_file(), name
        assert str(out / name) in proc.stdout
    assert "test macro-F1" in proc.stdout

    report = json.loads((out / "metrics.json").read_text())
    for key in ("teacher", "baseline_meanstd_logreg"):
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


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, tiny_data: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", tiny_data, teacher={"hidden_sise": 8})
    proc = _cli("train-teacher", "--config", str(bad), "--out", str(tmp_path / "t"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "teacher.hidden_sise" in lines[0] and "bad.yaml" in lines[0]
    assert not (tmp_path / "t").exists()
