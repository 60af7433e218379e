"""The stage folder: results move in only on success; the stage never stays behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.staging import staged


def test_success_moves_kept_files_and_removes_listed_ones(tmp_path: Path) -> None:
    dest = tmp_path / "deploy"
    dest.mkdir()
    (dest / "old.onnx").write_text("old")
    (dest / "rejected").mkdir()
    (dest / "rejected" / "x.onnx").write_text("refused")
    with staged(dest, "test") as stage:
        assert stage.path.parent == dest and stage.path.name.startswith(".test-")
        stage.keep("model.onnx").write_text("new")
        stage.keep("bad.onnx", into="rejected").write_text("refused")
        (stage.path / "scratch.onnx").write_text("not kept")
        stage.remove(dest / "old.onnx")
        stage.remove(dest / "rejected" / "x.onnx")
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "rejected"]
    assert (dest / "model.onnx").read_text() == "new"
    assert [p.name for p in (dest / "rejected").iterdir()] == ["bad.onnx"]


def test_failure_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    dest = tmp_path / "deploy"
    dest.mkdir()
    (dest / "model.onnx").write_text("old")
    with pytest.raises(RuntimeError, match="parity"), staged(dest, "test") as stage:
        stage.keep("model.onnx").write_text("new")
        stage.remove(dest / "model.onnx")
        raise RuntimeError("parity failed")
    assert [p.name for p in dest.iterdir()] == ["model.onnx"]
    assert (dest / "model.onnx").read_text() == "old"
