"""int8 quantization: dynamic and static variants, their manifest entries, per-channel weights,
the accuracy guard on the validation split, graphs not worth writing, batch invariance."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import torch

from converters.errors import ConverterError
from converters.export_onnx import export
from converters.onnx_files import op_counts
from converters.targets import convert, target_for
from edge_lstm.units import human_size
from runtime.manifest import Manifest
from tests.conftest import run_cli

NO_BENEFIT = "recurrent op {} stays fp32: no int8 benefit"


def quantize(deploy: Path, mode: str, **options) -> dict:
    """The int8 figures `edgelstm quantize --mode MODE` records, by artifact name."""
    return convert(target_for("quantize", mode), deploy, **options).result


def test_dynamic_int8_is_smaller_and_agrees(wide_gru_checkpoint: Path, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    export(wide_gru_checkpoint, deploy)
    results = quantize(deploy, "dynamic")
    # ONNX Runtime has no int8 GRU kernel: the window graph would stay fp32, so it is not written
    assert set(results) == {"step.int8-dynamic"}
    assert not (deploy / "model.int8-dynamic.onnx").exists()
    manifest = Manifest.load(deploy)
    for name in results:
        path = manifest.verified_path(deploy, name)
        assert manifest.artifacts[name].precision == "int8-dynamic"
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["precision"] == "int8-dynamic" and meta["model_name"] == manifest.model_name
    step = results["step.int8-dynamic"]
    assert step["not_written"] == {"window.int8-dynamic": NO_BENEFIT.format("GRU")}
    assert step["weight_scales"] == {"per_channel": 3, "per_tensor": []}  # W_ih, W_hh, head
    assert step["quantized_ops"].get("MatMulInteger", 0) >= 2
    assert step["size_bytes"] < 0.5 * step["size_bytes_fp32"]
    assert (deploy / "step.int8-dynamic.onnx").stat().st_size == step["size_bytes"]
    assert step["argmax_agreement"] >= 0.9
    assert step["latency_ms"]["b1"]["median_ms"] > 0
    assert step["latency_ms_fp32"]["b256"]["median_ms"] > 0
    assert manifest.artifacts["step.int8-dynamic"].info["macro_f1_fp32"] == pytest.approx(
        manifest.metrics["onnx_test"]["macro_f1"]
    )


def test_dynamic_lstm_window_graph_is_quantized_per_channel(lstm_deploy: Path, copy_deploy) -> None:
    deploy = copy_deploy(lstm_deploy)
    results = quantize(deploy, "dynamic")
    window = results["window.int8-dynamic"]
    assert window["quantized_ops"]["DynamicQuantizeLSTM"] == 2
    assert "LSTM" not in window["op_counts"]
    assert (
        window["weight_scales"]["per_channel"] >= 5 and window["weight_scales"]["per_tensor"] == []
    )
    scales = {
        i.name: list(i.dims)
        for i in onnx.load(str(deploy / "model.int8-dynamic.onnx")).graph.initializer
        if i.name.endswith("_scale")
    }
    hidden = Manifest.load(deploy).hidden_size
    assert [1, 4 * hidden] in scales.values()  # one scale per gate unit, not one per matrix


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
    assert step["weight_scales"]["per_channel"] == 5 and step["weight_scales"]["per_tensor"] == []
    # the window graph's LSTM stays fp32 under static QDQ: no artifact, no file
    assert set(results) == {"step.int8-static"}
    assert step["not_written"] == {"window.int8-static": NO_BENEFIT.format("LSTM")}
    assert not (deploy / "model.int8-static.onnx").exists()
    assert not (deploy / "rejected" / "model.int8-static.onnx").exists()


def _with_dead_unit_outliers(checkpoint: Path, out: Path) -> Path:
    """A copy of a trained GRU whose hidden unit 0 never leaves its zero start (its update gate
    pinned to 1) and whose head reads that unit with weight 1000 for every class.

    fp32 is exact (1000 × 0), but int8 scales each class's head column to its outlier, per
    channel too, rounding every other head weight to zero: the logits collapse to the biases,
    a real quantization failure that the accuracy guard must catch.
    """
    shutil.copytree(checkpoint, out)
    state = torch.load(out / "model.pt", weights_only=True)
    hidden = state["rnn.weight_hh_l0"].shape[1]
    state["rnn.bias_ih_l0"][hidden] = 1000.0  # gates r, z, n: z of unit 0 -> sigmoid = 1
    state["head.weight"][:, 0] = 1000.0
    torch.save(state, out / "model.pt")
    return out


@pytest.fixture(scope="module")
def outlier_deploy(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outlier")
    deploy = root / "deploy"
    export(_with_dead_unit_outliers(trained_checkpoint, root / "ckpt"), deploy)
    return deploy


def test_accuracy_guard_rejects_and_keeps_the_file_aside(outlier_deploy: Path, copy_deploy) -> None:
    deploy = copy_deploy(outlier_deploy)
    result = run_cli("quantize", str(deploy), "--tolerance", "1")
    assert result.exit_code == 2, result.output
    assert (
        "error: int8 (dynamic) lost more than 1 macro-F1 points on the validation split"
        in result.output
    )
    assert "step.int8-dynamic" in result.output
    assert (deploy / "rejected" / "step.int8-dynamic.onnx").is_file()
    assert not (deploy / "step.int8-dynamic.onnx").exists()
    manifest = Manifest.load(deploy)
    assert "step.int8-dynamic" not in manifest.artifacts
    # the window graph keeps its fp32 GRU: not written at all, neither listed nor kept aside
    assert "window.int8-dynamic" not in manifest.artifacts
    assert not (deploy / "model.int8-dynamic.onnx").exists()
    assert not (deploy / "rejected" / "model.int8-dynamic.onnx").exists()

    export(Path(manifest.provenance["checkpoint"]), deploy)  # a new export clears the variants
    assert not (deploy / "rejected").exists()
    assert set(Manifest.load(deploy).artifacts) == {"window", "step"}


def test_the_guard_decides_on_the_validation_split(outlier_deploy: Path, copy_deploy) -> None:
    """With the tolerance between the validation and the test split's drop, the validation
    drop decides; --guard-split test makes the test drop decide."""
    deploy = copy_deploy(outlier_deploy)
    info = quantize(deploy, "dynamic", tolerance_points=100.0)["step.int8-dynamic"]
    guard, test_drop = info["guard"], info["macro_f1_drop_points"]
    assert guard["split"] == "val" and guard["passed"] and guard["tolerance_points"] == 100.0
    val_drop = guard["macro_f1_drop_points"]
    assert val_drop > 1 and test_drop > 1 and abs(val_drop - test_drop) > 0.1, (val_drop, test_drop)
    between = (val_drop + test_drop) / 2
    for split, drop in (("val", val_drop), ("test", test_drop)):
        if drop > between:
            with pytest.raises(
                ConverterError, match=f"on the {'validation' if split == 'val' else 'test'} split"
            ):
                quantize(deploy, "dynamic", tolerance_points=between, guard_split=split)
        else:
            kept = quantize(deploy, "dynamic", tolerance_points=between, guard_split=split)
            assert kept["step.int8-dynamic"]["guard"]["split"] == split


def test_without_validation_windows_the_guard_needs_to_be_told(tiny_config, tmp_path: Path) -> None:
    from edge_lstm.config import SplitConfig
    from tests.helpers_deploy import make_tiny_checkpoint

    no_val = SplitConfig(train=0.7, val=0.0, test=0.3)
    cfg = tiny_config.model_copy(
        update={"data": tiny_config.data.model_copy(update={"split": no_val})}
    )
    deploy = tmp_path / "deploy"
    export(make_tiny_checkpoint(tmp_path / "ckpt", cfg), deploy)
    result = run_cli("quantize", str(deploy), "--mode", "static")
    assert result.exit_code == 2, result.output
    assert "no validation windows" in result.output and "--guard-split test" in result.output
    assert not (deploy / "step.int8-static.onnx").exists()
    result = run_cli("quantize", str(deploy), "--mode", "static", "--guard-split", "test")
    assert result.exit_code == 0, result.output
    info = Manifest.load(deploy).artifacts["step.int8-static"].info
    assert info["guard"]["split"] == "test" and info["guard"]["windows"] == info["test_windows"]


def test_static_step_graph_is_batch_invariant_and_dynamic_is_not(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    """Each window alone (batch 1) against all of them in one batch, as a gateway batches the
    devices it serves: static scales are constants, dynamic ones follow each call's batch."""
    import numpy as np

    from converters.parity import StepGraph, ort_session, sample_windows, step_graph_logits
    from edge_lstm.config import config_from_dict
    from edge_lstm.data.prepare import prepare_data
    from edge_lstm.metrics import softmax

    deploy = tmp_path / "deploy"
    export(trained_checkpoint, deploy)
    dynamic = quantize(deploy, "dynamic")["step.int8-dynamic"]
    static = quantize(deploy, "static", calibration_windows=32)["step.int8-static"]
    manifest = Manifest.load(deploy)
    data = prepare_data(config_from_dict(manifest.provenance["config"]))
    x = sample_windows([data.test, data.val], "held out").x

    def batch_diff(file: str) -> float:
        graph = StepGraph(ort_session(deploy / file), manifest)
        alone = np.concatenate([step_graph_logits(graph, x[i : i + 1]) for i in range(len(x))])
        return float(np.abs(softmax(alone) - softmax(step_graph_logits(graph, x))).max())

    assert batch_diff("step.int8-static.onnx") <= 1e-6
    assert static["batch_invariant"] and static["max_batch_diff"] <= 1e-6
    assert static["batch_check_windows"] == len(x)
    assert static["serving"].startswith("recommended for serving: batch-invariant")
    assert batch_diff("step.int8-dynamic.onnx") > 1e-6
    assert not dynamic["batch_invariant"]
    assert dynamic["max_batch_diff"] == pytest.approx(batch_diff("step.int8-dynamic.onnx"))
    assert dynamic["serving"].startswith("not batch-invariant")
    assert "serve step.int8-static" in dynamic["serving"]


def test_the_static_row_of_the_table_comes_from_the_step_graph(
    gru_checkpoint: Path, tmp_path: Path
) -> None:
    from converters.comparison import ComparisonRow, load_comparison, update_comparison

    ckpt = Path(shutil.copytree(gru_checkpoint, tmp_path / "student"))
    row = ComparisonRow("student-gru8x1", "torch", "fp32", 0.5, 0.5, 100, 1000, 0.1, 1.0)
    update_comparison(ckpt / "comparison.json", [row])
    deploy = tmp_path / "deploy"
    export(ckpt, deploy)
    quantize(deploy, "static", calibration_windows=8)
    rows = {(r.runtime, r.precision): r for r in load_comparison(ckpt / "comparison.json")}
    static = rows[("onnxruntime", "int8-static")]
    info = Manifest.load(deploy).artifacts["step.int8-static"].info
    assert static.size_bytes == (deploy / "step.int8-static.onnx").stat().st_size
    assert static.macro_f1 == pytest.approx(info["macro_f1"])
    assert static.latency_ms_b1 is None and static.latency_ms_b256 is None
    assert f"window graph not written: {NO_BENEFIT.format('GRU')}" in static.notes
    assert "ms/step at b1" in static.notes


def test_cli_quantize_prints_the_table(gru_deploy: Path, copy_deploy) -> None:
    deploy = copy_deploy(gru_deploy)
    result = run_cli("quantize", str(deploy), "--mode", "static", "--calibration-windows", "8")
    assert result.exit_code == 0, result.output
    assert "step.int8-static" in result.output and "macro-F1 fp32 -> int8" in result.output
    assert f"next: edgelstm build-engine {deploy} --precision int8" in result.output
    size = (deploy / "step.int8-static.onnx").stat().st_size
    assert f"step.int8-static.onnx ({human_size(size)})" in result.output
    assert op_counts(deploy / "step.int8-static.onnx").get("DequantizeLinear", 0) > 0
    assert "step.int8-static: accuracy guard on the validation split" in result.output
    assert "step.int8-static: recommended for serving: batch-invariant" in result.output
    assert f"window.int8-static: not written: {NO_BENEFIT.format('GRU')}" in result.output
    assert "model.int8-static.onnx" not in result.output


def test_cli_refuses_options_the_mode_does_not_take(gru_deploy: Path) -> None:
    result = run_cli("quantize", str(gru_deploy), "--calibration-windows", "8")
    assert result.exit_code == 2
    assert "does not accept calibration_windows" in result.output
    result = run_cli("quantize", str(gru_deploy), "--mode", "statik")
    assert result.exit_code == 2
    assert "did you mean 'static'?" in result.output
