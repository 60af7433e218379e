"""int8 quantization: dynamic and static variants, their manifest entries, the accuracy guard."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import torch

from converters.export_onnx import export
from converters.onnx_files import op_counts
from converters.targets import convert, target_for
from edge_lstm.units import human_size
from runtime.manifest import Manifest
from tests.conftest import run_cli


def quantize(deploy: Path, mode: str, **options) -> dict:
    """The int8 figures `edgelstm quantize --mode MODE` records, by artifact name."""
    return convert(target_for("quantize", mode), deploy, **options).result


def test_dynamic_int8_is_smaller_and_agrees(wide_gru_checkpoint: Path, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    export(wide_gru_checkpoint, deploy)
    results = quantize(deploy, "dynamic")
    assert set(results) == {"window.int8-dynamic", "step.int8-dynamic"}
    manifest = Manifest.load(deploy)
    for name in results:
        path = manifest.verified_path(deploy, name)
        assert manifest.artifacts[name].precision == "int8-dynamic"
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["precision"] == "int8-dynamic" and meta["model_name"] == manifest.model_name
    step = results["step.int8-dynamic"]
    assert step["quantized_ops"].get("MatMulInteger", 0) >= 2
    assert step["size_bytes"] < 0.5 * step["size_bytes_fp32"]
    assert (deploy / "step.int8-dynamic.onnx").stat().st_size == step["size_bytes"]
    assert step["argmax_agreement"] >= 0.9
    assert step["latency_ms"]["b1"]["median_ms"] > 0
    assert step["latency_ms_fp32"]["b256"]["median_ms"] > 0
    window = results["window.int8-dynamic"]
    assert window["fp32_recurrent_ops"] == ["GRU"]  # ONNX Runtime has no int8 GRU kernel
    assert manifest.artifacts["step.int8-dynamic"].info["macro_f1_fp32"] == pytest.approx(
        manifest.metrics["onnx_test"]["macro_f1"]
    )


def test_static_qdq_leaves_the_recurrent_state_fp32(lstm_deploy: Path, copy_deploy) -> None:
    deploy = copy_deploy(lstm_deploy)
    results = quantize(deploy, "static", calibration_windows=16)
    step = results["step.int8-static"]
    assert step["calibration_windows"] == 16
    assert step["quantized_ops"]["QuantizeLinear"] >= 4
    assert step["argmax_agreement"] >= 0.9
    graph = onnx.load(str(deploy / "step.int8-static.onnx")).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    for state_out in ("h_out", "c_out"):
        assert producers[state_out] != "DequantizeLinear"
    quantized_inputs = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    c_layers = {out for node in graph.node if "c" in node.input for out in node.output}
    assert c_layers and not ({"c"} | c_layers) & quantized_inputs
    assert Manifest.load(deploy).artifacts["step.int8-static"].info["mode"] == "static"


def _with_weight_outlier(checkpoint: Path, out: Path) -> Path:
    """A copy of a trained GRU with one huge input weight on a hidden unit that reaches nothing.

    fp32 is barely affected (the unit's output is cut off), but per-tensor int8 scales the
    whole input matrix to that outlier, rounding every other input weight to zero: a real
    quantization failure that the accuracy guard must catch.
    """
    shutil.copytree(checkpoint, out)
    state = torch.load(out / "model.pt", weights_only=True)
    hidden = state["rnn.weight_hh_l0"].shape[1]
    state["rnn.weight_ih_l0"][2 * hidden, 0] = 1000.0
    state["rnn.weight_hh_l0"][:, 0] = 0.0
    state["head.weight"][:, 0] = 0.0
    torch.save(state, out / "model.pt")
    return out


def test_accuracy_guard_rejects_and_keeps_the_file_aside(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = _with_weight_outlier(trained_checkpoint, tmp_path / "outlier")
    deploy = tmp_path / "deploy"
    export(ckpt, deploy)
    result = run_cli("quantize", str(deploy), "--tolerance", "1")
    assert result.exit_code == 2, result.output
    assert "error: int8 (dynamic) lost more than 1 macro-F1 points" in result.output
    assert "step.int8-dynamic" in result.output
    assert (deploy / "rejected" / "step.int8-dynamic.onnx").is_file()
    assert not (deploy / "step.int8-dynamic.onnx").exists()
    manifest = Manifest.load(deploy)
    assert "step.int8-dynamic" not in manifest.artifacts
    # the window graph keeps its fp32 GRU, so its int8 variant passes and is listed
    assert "window.int8-dynamic" in manifest.artifacts

    export(ckpt, deploy)  # a new export clears the variants of the previous one
    assert not (deploy / "rejected").exists()
    assert not (deploy / "model.int8-dynamic.onnx").exists()
    assert set(Manifest.load(deploy).artifacts) == {"window", "step"}


def test_cli_quantize_prints_the_table(gru_deploy: Path, copy_deploy) -> None:
    deploy = copy_deploy(gru_deploy)
    result = run_cli("quantize", str(deploy), "--mode", "static", "--calibration-windows", "8")
    assert result.exit_code == 0, result.output
    assert "step.int8-static" in result.output and "macro-F1 fp32 -> int8" in result.output
    assert f"next: edgelstm build-engine {deploy} --precision int8" in result.output
    size = (deploy / "step.int8-static.onnx").stat().st_size
    assert f"step.int8-static.onnx ({human_size(size)})" in result.output
    assert op_counts(deploy / "step.int8-static.onnx").get("DequantizeLinear", 0) > 0


def test_cli_refuses_options_the_mode_does_not_take(gru_deploy: Path) -> None:
    result = run_cli("quantize", str(gru_deploy), "--calibration-windows", "8")
    assert result.exit_code == 2
    assert "does not accept calibration_windows" in result.output
    result = run_cli("quantize", str(gru_deploy), "--mode", "statik")
    assert result.exit_code == 2
    assert "did you mean 'static'?" in result.output
