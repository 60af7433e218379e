"""Checkpoint round trip and the errors a user sees for a broken checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_lstm.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from edge_lstm.config import StudentConfig, TeacherConfig
from edge_lstm.errors import CheckpointError
from edge_lstm.models import Student, Teacher, count_parameters

F, C = 5, 3


def _meta(model: torch.nn.Module, kind: str, section) -> CheckpointMeta:
    return CheckpointMeta(
        kind=kind,
        model_config=section.model_dump(mode="json"),
        features=[f"s{i}" for i in range(F)],
        classes=["normal", "a", "b"],
        normalization={"mean": [0.0] * F, "std": [1.0] * F},
        window=10,
        hop=5,
        sample_period_s=0.1,
        config={"note": "full config dump"},
        metrics={"test": {"macro_f1": 0.5}},
        n_parameters=count_parameters(model),
        name=kind,
        version="test",
    )


@pytest.fixture
def student_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    section = StudentConfig(cell="lstm", layers=2, hidden_size=8, head_hidden=4)
    model = Student(F, C, section)
    return save_checkpoint(tmp_path / "student", model, _meta(model, "student", section))


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_round_trip_gives_the_same_logits(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(1)
    if kind == "teacher":
        section = TeacherConfig(hidden_size=8, layers=2, attention_size=4, dropout=0.3)
        model = Teacher(F, C, section)
    else:
        section = StudentConfig(cell="gru", hidden_size=8, layers=2, dropout=0.2)
        model = Student(F, C, section)
    model.eval()
    meta = _meta(model, kind, section)
    out = save_checkpoint(tmp_path / kind, model, meta)
    assert (out / WEIGHTS_FILE).is_file() and (out / META_FILE).is_file()

    for path in (out, out / WEIGHTS_FILE, out / META_FILE):
        loaded = load_checkpoint(path)
        assert not loaded.model.training
        assert loaded.meta == meta
        assert loaded.path == out
        x = torch.randn(4, 10, F)
        with torch.no_grad():
            assert torch.equal(loaded.model(x), model(x))


def test_weights_file_holds_tensors_only(student_dir: Path) -> None:
    state = torch.load(student_dir / WEIGHTS_FILE, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((student_dir / META_FILE).read_text())
    assert meta["kind"] == "student" and meta["model_config"]["cell"] == "lstm"


def test_missing_directory_or_files(tmp_path: Path, student_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        load_checkpoint(tmp_path / "nope")
    (student_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"model\.pt is missing"):
        load_checkpoint(student_dir)
    (student_dir / META_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"model\.json is missing"):
        load_checkpoint(student_dir)


def test_corrupt_weights(student_dir: Path) -> None:
    (student_dir / WEIGHTS_FILE).write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as weights"):
        load_checkpoint(student_dir)


def test_pickled_code_is_refused(student_dir: Path) -> None:
    """A model.pt carrying arbitrary objects is refused by the weights-only loader."""
    torch.save({"rnn.weight_ih_l0": Path("x")}, student_dir / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="cannot be read as weights"):
        load_checkpoint(student_dir)


def test_corrupt_or_incomplete_meta(student_dir: Path) -> None:
    meta_path = student_dir / META_FILE
    raw = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(student_dir)
    meta_path.write_text(json.dumps({k: v for k, v in raw.items() if k != "classes"}))
    with pytest.raises(CheckpointError, match="missing keys classes"):
        read_meta(student_dir)
    meta_path.write_text(json.dumps({**raw, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format 99 is not supported"):
        load_checkpoint(student_dir)


def test_format_1_loads_unless_its_head_was_trained_on_std(student_dir: Path) -> None:
    """Format 2 changed only what window_stats feeds the head: other format-1 models load."""
    meta_path = student_dir / META_FILE
    raw = json.loads(meta_path.read_text())
    assert not raw["model_config"]["window_stats"]
    meta_path.write_text(json.dumps({**raw, "format_version": 1}))
    assert load_checkpoint(student_dir).meta.name == raw["name"]
    stats_config = {**raw["model_config"], "window_stats": True}
    meta_path.write_text(json.dumps({**raw, "format_version": 1, "model_config": stats_config}))
    with pytest.raises(CheckpointError, match="std; this edgelstm feeds log std: train it again"):
        load_checkpoint(student_dir)


def test_meta_that_does_not_match_the_weights(student_dir: Path) -> None:
    meta_path = student_dir / META_FILE
    raw = json.loads(meta_path.read_text())
    raw["model_config"]["hidden_size"] = 16
    meta_path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"weights do not match model\.json"):
        load_checkpoint(student_dir)
    raw["model_config"]["hidden_size"] = 8
    raw["classes"] = ["normal", "a", "b", "c"]
    meta_path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"weights do not match model\.json"):
        load_checkpoint(student_dir)
    raw["classes"] = ["normal", "a", "b"]
    raw["model_config"]["cell"] = "rnn"
    meta_path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="invalid student model_config"):
        load_checkpoint(student_dir)
