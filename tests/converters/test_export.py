"""ONNX export: round trip, parity, loop-free step graph, metadata, manifest and its sha256."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.errors import ConverterError
from converters.export_onnx import export
from converters.onnx_files import LOOP_OPS, op_counts
from converters.parity import StepGraph, ort_session, step_graph_logits, window_logits
from edge_lstm.units import human_size
from runtime.errors import ManifestError
from runtime.manifest import Manifest
from tests.conftest import run_cli


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_gru_export_round_trip(gru_deploy: Path, prepared) -> None:
    manifest = Manifest.load(gru_deploy)
    assert manifest.model_kind == "student" and manifest.cell == "gru"
    assert set(manifest.artifacts) == {"window", "step"}
    for name, art in manifest.artifacts.items():
        assert manifest.verified_path(gru_deploy, name).stat().st_size == art.size_bytes
        assert art.precision == "fp32" and len(art.sha256) == 64
    parity = manifest.metrics["parity"]
    assert parity["window"]["max_abs_diff"] <= 1e-4
    assert parity["step"]["max_abs_diff"] <= 1e-4
    assert parity["step"]["argmax_mismatches"] == 0
    assert 0.0 <= manifest.metrics["onnx_test"]["macro_f1"] <= 1.0
    assert manifest.provenance["config"]["student"]["cell"] == "gru"
    assert Path(manifest.provenance["checkpoint"]).is_dir()

    # both graphs agree with each other on windows of another batch size than the trace
    x = prepared.test.x[:5]
    by_window = window_logits(ort_session(gru_deploy / "model.onnx"), x)
    graph = StepGraph(ort_session(gru_deploy / "step.onnx"), manifest)
    assert graph.state_names == ("h",) and graph.manifest.layers == 1
    np.testing.assert_allclose(step_graph_logits(graph, x), by_window, atol=1e-5)
    single = window_logits(ort_session(gru_deploy / "model.onnx"), x[:1])
    np.testing.assert_allclose(single, by_window[:1], atol=1e-5)


def test_graph_structure_and_metadata(gru_deploy: Path) -> None:
    manifest = Manifest.load(gru_deploy)
    step_ops = op_counts(gru_deploy / "step.onnx")
    assert not set(step_ops) & LOOP_OPS
    assert step_ops.get("MatMul", 0) >= 2
    if importlib.util.find_spec("onnxscript") is not None:
        assert "Shape" not in step_ops  # shape arithmetic folded into constants
    window = onnx.load(str(gru_deploy / "model.onnx"))
    assert window.opset_import[0].version == 17
    grus = [n for n in window.graph.node if n.op_type == "GRU"]
    assert grus, "the window graph should use the ONNX GRU op"
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == 1  # PyTorch's GRU semantics
    for file, graph in (("model.onnx", "window"), ("step.onnx", "step")):
        meta = _metadata(gru_deploy / file)
        assert meta["graph"] == graph and meta["precision"] == "fp32"
        assert json.loads(meta["features"]) == manifest.features
        assert json.loads(meta["classes"]) == manifest.classes
        as_float32 = np.asarray(json.loads(meta["norm_std"]), np.float32)
        np.testing.assert_array_equal(as_float32, np.asarray(manifest.norm_std, np.float32))
        assert int(meta["window"]) == manifest.window
    step = ort_session(gru_deploy / "step.onnx")
    assert [i.name for i in step.get_inputs()] == ["x", "h"]
    assert [o.name for o in step.get_outputs()] == ["logits", "h_out"]


def test_lstm_two_layers(lstm_deploy: Path) -> None:
    manifest = Manifest.load(lstm_deploy)
    assert manifest.state_names == ("h", "c") and manifest.layers == 2
    assert manifest.metrics["parity"]["step"]["max_abs_diff"] <= 1e-4
    session = ort_session(lstm_deploy / "step.onnx")
    assert [o.name for o in session.get_outputs()] == ["logits", "h_out", "c_out"]
    shape = session.get_inputs()[2].shape
    assert shape[0] == 2 and shape[2] == manifest.hidden_size and isinstance(shape[1], str)
    assert not set(op_counts(lstm_deploy / "step.onnx")) & LOOP_OPS


def test_teacher_exports_window_graph_only(teacher_checkpoint: Path, tmp_path: Path) -> None:
    manifest = export(teacher_checkpoint, tmp_path / "deploy")
    assert manifest.model_kind == "teacher" and manifest.cell is None
    assert set(manifest.artifacts) == {"window"}
    assert manifest.metrics["parity"]["window"]["max_abs_diff"] <= 1e-4
    assert not (tmp_path / "deploy" / "step.onnx").exists()


def test_tampered_artifact_is_refused(gru_deploy: Path, copy_deploy) -> None:
    folder = copy_deploy(gru_deploy)
    manifest = Manifest.load(folder)
    data = bytearray((folder / "step.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "step.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match its manifest sha256"):
        manifest.verified_path(folder, "step")
    manifest.verified_path(folder, "window")


def test_parity_failure_reports_the_difference(
    gru_checkpoint: Path, tiny_config, tmp_path: Path
) -> None:
    strict = tiny_config.model_copy(
        update={"export": tiny_config.export.model_copy(update={"parity_tolerance": 1e-12})}
    )
    out = tmp_path / "deploy"
    with pytest.raises(ConverterError, match=r"parity failed for the window graph: .* = \d"):
        export(gru_checkpoint, out, strict)
    assert list(out.iterdir()) == []


def test_cli_export_adds_a_comparison_row(gru_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from converters.comparison import ComparisonRow, load_comparison, update_comparison

    ckpt = Path(shutil.copytree(gru_checkpoint, tmp_path / "student"))
    update_comparison(
        ckpt / "comparison.json",
        [ComparisonRow("student-gru8x1", "pytorch", "fp32", 0.5, 0.5, 100, 1000, 0.1, 1.0)],
    )
    out = tmp_path / "deploy"
    result = run_cli("export", str(ckpt), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"next: edgelstm quantize {out}" in result.output
    assert "parity step: max |diff|" in result.output
    assert "parity sample (test and validation splits): 9 classes" in result.output
    assert "validation windows: ECE" in result.output
    for file in ("model.onnx", "step.onnx"):
        assert f"{file} ({human_size((out / file).stat().st_size)})" in result.output
    assert not list(out.glob(".export-*"))
    rows = {(r.runtime, r.precision): r for r in load_comparison(ckpt / "comparison.json")}
    assert ("onnxruntime", "fp32") in rows and ("pytorch", "fp32") in rows
    onnx_row = rows[("onnxruntime", "fp32")]
    assert onnx_row.size_bytes == (out / "model.onnx").stat().st_size
    assert onnx_row.latency_ms_b1 > 0 and onnx_row.latency_ms_b256 > 0


def test_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    result = run_cli("export", str(tmp_path / "nope"), "--out", str(tmp_path / "d"))
    assert result.exit_code == 2
    assert result.output.startswith("error: ")


def test_export_refuses_data_the_model_was_not_trained_on(
    gru_checkpoint: Path, tmp_path: Path
) -> None:
    from edge_lstm.simulate import write_dataset

    other = write_dataset(tmp_path / "other.parquet", seed=7, runs_per_class=4, run_length=200)
    with pytest.raises(ConverterError, match="not the data the model was trained on"):
        export(gru_checkpoint, tmp_path / "deploy", data_path=other)
    assert not (tmp_path / "deploy").exists()


def test_parity_runs_on_a_stratified_sample_of_held_out_windows(gru_deploy: Path, prepared):
    """Every class of the test and validation splits, from more than the first runs of the
    test split, about export.parity_windows windows in all (at least one per class)."""
    manifest = Manifest.load(gru_deploy)
    coverage = manifest.metrics["parity_coverage"]
    held_out = np.concatenate([prepared.test.y, prepared.val.y])
    present = sorted(set(held_out.tolist()))
    assert coverage["classes"] == len(present) == len(manifest.classes)
    assert coverage["missing_classes"] == []
    assert coverage["source"] == "test and validation splits"
    first_windows = prepared.test.run_ids[:8]  # what parity used to check
    assert coverage["runs"] > len(set(first_windows.tolist()))
    for graph in ("window", "step"):
        assert manifest.metrics["parity"][graph]["windows"] == coverage["windows"]
    assert coverage["windows"] == len(present)  # parity_windows 8 < 9 classes: one each


def test_parity_sample_spreads_its_windows_over_classes_and_runs(prepared) -> None:
    from converters.export_onnx import parity_sample

    sample = parity_sample(prepared, 64)
    counts = np.bincount(sample.y, minlength=len(prepared.classes))
    assert counts.sum() <= 64 and set(counts.tolist()) == {64 // len(prepared.classes)}
    described = sample.describe(prepared.classes)
    assert all(runs >= 2 for runs in described["runs_per_class"].values())


def test_the_temperature_is_fitted_on_validation_logits(gru_deploy: Path, prepared) -> None:
    from edge_lstm.calibration import calibration_report, fit_temperature

    manifest = Manifest.load(gru_deploy)
    logits = window_logits(ort_session(gru_deploy / "model.onnx"), prepared.val.x)
    assert manifest.temperature == pytest.approx(fit_temperature(logits, prepared.val.y))
    stored = manifest.metrics["calibration"]
    expected = calibration_report(logits, prepared.val.y, manifest.temperature)
    assert stored["split"] == "val" and stored["windows"] == len(prepared.val.y)
    assert stored["before"] == pytest.approx(expected["before"])
    assert stored["after"] == pytest.approx(expected["after"])


def test_no_validation_windows_leave_the_temperature_at_one(
    gru_deploy: Path, prepared, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    from converters.export_onnx import calibrate
    from edge_lstm.data.windows import concat_windows

    manifest = Manifest.load(gru_deploy)
    no_val = dataclasses.replace(
        prepared, val=concat_windows([], manifest.window, manifest.n_features)
    )
    with caplog.at_level("WARNING", logger="converters.export_onnx"):
        entry = calibrate(gru_deploy / "model.onnx", manifest, no_val)
    assert manifest.temperature == 1.0 and entry["temperature"] == 1.0
    assert "no validation windows" in entry["note"]
    assert "temperature left at 1.0" in caplog.text
