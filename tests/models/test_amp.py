"""Mixed precision (`train.precision`): bf16 autocast trains on CPU, the weights stay fp32 and
the exported ONNX graphs still match torch; fp16 without CUDA is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from edge_lstm.config import StudentConfig, TrainConfig, config_from_dict
from edge_lstm.errors import ConfigError
from edge_lstm.models import Student
from edge_lstm.training import fit, predict_logits, seed_everything
from edge_lstm.training.trainer import autocast_dtype
from tests.conftest import run_cli, write_config
from tests.helpers_deploy import make_tiny_checkpoint
from tests.models.conftest import N_CLASSES, N_FEATURES


def _val_loss(model, windows) -> float:
    logits = torch.from_numpy(predict_logits(model, windows.x))
    return F.cross_entropy(logits, torch.from_numpy(windows.y)).item()


def test_bf16_on_cpu_learns_and_keeps_fp32_weights(train_windows, val_windows) -> None:
    seed_everything(0)
    model = Student(N_FEATURES, N_CLASSES, StudentConfig(cell="lstm", hidden_size=16))
    seen: set[torch.dtype] = set()

    def record(_module, _inputs, out) -> None:
        if model.training:
            seen.add(out.dtype)

    model.head.register_forward_hook(record)
    before = _val_loss(model, val_windows)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.02, precision="bf16")
    result = fit(model, train_windows, val_windows, cfg)
    after = _val_loss(model, val_windows)
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    print(f"bf16: val loss {before:.4f} -> {after:.4f}, train loss {first:.4f} -> {last:.4f}")
    assert seen == {torch.bfloat16}  # the training forward ran under bf16 autocast
    assert result.precision == "bf16"
    assert last < first
    assert after < 0.7 * before
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())


def test_a_bf16_trained_student_exports_with_parity(tmp_path: Path, tiny_config) -> None:
    """Saved in fp32, so both ONNX graphs match torch within export.parity_tolerance."""
    from converters.export_onnx import export

    cfg = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"precision": "bf16"})}
    )
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", cfg, cell="lstm", epochs=2)
    weights = torch.load(ckpt / "model.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in weights.values())
    manifest = export(ckpt, tmp_path / "deploy")
    parity = manifest.metrics["parity"]
    window, step = (parity[g]["max_abs_diff"] for g in ("window", "step"))
    print(f"bf16 export parity: window {window:.2e}, step {step:.2e}")
    for graph in ("window", "step"):
        assert parity[graph]["max_abs_diff"] <= cfg.export.parity_tolerance
        assert parity[graph]["argmax_mismatches"] == 0
    assert manifest.provenance["config"]["train"]["precision"] == "bf16"


def test_precision_choices_and_refusals(tmp_path: Path, tiny_data: Path) -> None:
    assert TrainConfig().precision == "fp32" and autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU and this run trains on cpu"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ConfigError, match=r"train\.precision"):
        config_from_dict({"data": {"path": "x"}, "train": {"precision": "int8"}})

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine trains fp16")
    config = write_config(tmp_path / "fp16.yaml", tiny_data, train={"precision": "fp16"})
    result = run_cli("train-teacher", "--config", str(config), "--out", str(tmp_path / "t"))
    assert result.exit_code == 2
    assert "fp16 needs a CUDA GPU" in result.output
    assert not (tmp_path / "t").exists()
