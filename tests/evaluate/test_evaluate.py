"""`edgelstm evaluate` on checkpoints and ONNX graphs: files written, errors as one line, and
the figures beside the headline (intervals, onset/steady, detection under the gateway's
debounce rule, calibration at the served temperature, the window baseline)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edge_lstm.baselines import BASELINE_NAME
from edge_lstm.checkpoint import read_meta
from edge_lstm.data.alignment import align_labels, align_windows
from edge_lstm.data.normalization import Normalization
from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import softmax
from edge_lstm.reporting.evaluate import evaluate_artifact, report_lines
from edge_lstm.reporting.predictors import open_predictor
from runtime.manifest import Manifest
from tests.conftest import run_cli


def _run(*args: str):
    """Invokes `edgelstm evaluate ARGS` in-process."""
    return run_cli("evaluate", *args)


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_evaluate_checkpoint_writes_json_and_png(tiny_teacher: Path, tiny_data: Path, tmp_path):
    out = tmp_path / "eval"
    result = _run(
        str(tiny_teacher),
        "--data",
        str(tiny_data),
        "--split",
        "test",
        "--out",
        str(out),
        "--no-baseline",
    )
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.output and "kappa" in result.output

    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test" and report["artifact"]["kind"] == "torch"
    for key in ("accuracy", "macro_f1", "weighted_f1", "roc_auc_macro"):
        assert 0.0 <= report[key] <= 1.0
    assert -1.0 <= report["cohen_kappa"] <= 1.0
    assert len(report["per_class"]) == len(report["classes"])
    # the rebuilt test split is the one the teacher was scored on when it was trained
    trained = read_meta(tiny_teacher).metrics["test"]
    assert report["macro_f1"] == pytest.approx(trained["macro_f1"], abs=1e-6)
    assert report["n"] == int(np.sum(report["confusion_matrix"]))
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"

    # a checkpoint stores no temperature: T = 1, so calibration is the same before and after
    calibration = report["calibration"]
    assert calibration["temperature"] == 1.0 and calibration["before"] == calibration["after"]
    assert calibration["temperature_source"] == "none stored in a checkpoint"
    assert report["baseline"] is None and "baseline: skipped (--no-baseline)" in result.output
    assert report["vs_baseline"] is None
    for text in ("95% CI", "onset windows", "steady windows", "fault runs detected", "T = 1 "):
        assert text in result.output


def test_evaluate_defaults_beside_the_artifact(tiny_teacher: Path):
    result = _run(str(tiny_teacher / "model.pt"), "--split", "val", "--no-baseline")
    assert result.exit_code == 0, result.output
    assert (tiny_teacher / "eval-val" / "metrics.json").is_file()
    assert (tiny_teacher / "eval-val" / "confusion.png").is_file()


def test_onnx_graphs_score_like_the_checkpoint(tiny_student: Path, tiny_deploy: Path, tmp_path):
    torch_eval = evaluate_artifact(tiny_student, out_dir=tmp_path / "torch", baseline=False)
    for graph, kind in (("model.onnx", "onnx-window"), ("step.onnx", "onnx-step")):
        result = evaluate_artifact(tiny_deploy / graph, out_dir=tmp_path / graph, baseline=False)
        assert result.kind == kind
        assert result.metrics["confusion_matrix"] == torch_eval.metrics["confusion_matrix"]
        assert result.metrics["macro_f1"] == pytest.approx(torch_eval.metrics["macro_f1"])


def test_step_graph_probabilities_match_torch(tiny_student: Path, tiny_deploy: Path):
    """The same logits; the ONNX predictor's probabilities at the manifest's temperature (what
    the gateway serves), the checkpoint's at T = 1 (it stores none)."""
    torch_pred = open_predictor(tiny_student)
    step_pred = open_predictor(tiny_deploy / "step.onnx")
    assert step_pred.features == torch_pred.features and step_pred.classes == torch_pred.classes
    x = np.random.default_rng(0).standard_normal((300, torch_pred.window, 24), np.float32)
    logits = torch_pred.predict_logits(x)
    np.testing.assert_allclose(step_pred.predict_logits(x), logits, atol=1e-4)
    temperature = Manifest.load(tiny_deploy).temperature
    assert step_pred.temperature == temperature != 1.0 and torch_pred.temperature == 1.0
    np.testing.assert_allclose(step_pred.predict_proba(x), softmax(logits, temperature), atol=1e-4)
    np.testing.assert_allclose(torch_pred.predict_proba(x), softmax(logits), atol=1e-6)


def test_engines_are_driven_like_the_step_graph(tiny_student: Path, tiny_deploy: Path):
    """Engines run through a runtime step backend behind parity's step loop; checked here with
    the ONNX Runtime backend, which speaks the same `step(x, state)` protocol."""
    from converters.parity import BackendSteps, step_graph_logits
    from edge_lstm.reporting.predictors import BATCH
    from runtime.backends.base import open_backend

    manifest = Manifest.load(tiny_deploy)
    graph = BackendSteps(open_backend(tiny_deploy, manifest, artifact="step"), manifest)
    x = np.random.default_rng(1).standard_normal((BATCH + 7, manifest.window, 24), np.float32)
    step_pred = open_predictor(tiny_deploy / "step.onnx")
    np.testing.assert_allclose(
        manifest.probabilities(step_graph_logits(graph, x, batch=BATCH)),
        step_pred.predict_proba(x),
        atol=1e-6,
    )


def test_tampered_onnx_is_refused(tiny_deploy: Path, tmp_path):
    bad = tmp_path / "deploy"
    bad.mkdir()
    for f in tiny_deploy.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(EdgeLstmError, match="sha256"):
        open_predictor(bad / "model.onnx")


def test_missing_path_is_one_line_exit_2(tmp_path):
    _assert_one_line_error(_run(str(tmp_path / "nope")), "no such file")


def test_unknown_suffix_is_one_line_exit_2(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    _assert_one_line_error(_run(str(path)), "unknown artifact type", ".bin")


def test_feature_mismatch_is_one_line_exit_2(tiny_teacher: Path, tiny_data: Path, tmp_path):
    frame = pd.read_parquet(tiny_data).drop(columns=["temp_oil"])
    data = tmp_path / "fewer.parquet"
    frame.to_parquet(data)
    _assert_one_line_error(_run(str(tiny_teacher), "--data", str(data)), "temp_oil")


def test_align_windows_reorders_and_renormalizes() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(3.0, 2.0, size=(5, 4, 3)).astype(np.float32)
    data_norm = Normalization.fit(raw.reshape(-1, 3))
    model_features = ["c", "a"]
    model_norm = Normalization(mean=np.array([1.0, -1.0]), std=np.array([2.0, 0.5]))
    got = align_windows(
        data_norm.apply(raw), ["a", "b", "c"], data_norm, model_features, model_norm
    )
    np.testing.assert_allclose(got, model_norm.apply(raw[:, :, [2, 0]]), atol=1e-5)
    same = data_norm.apply(raw)
    assert align_windows(same, ["a", "b", "c"], data_norm, ["a", "b", "c"], data_norm) is same


def test_align_labels_maps_by_name_and_refuses_unknown_classes() -> None:
    y = np.array([0, 1, 2, 1])
    got = align_labels(y, ["normal", "x", "y"], ["normal", "y", "x"])
    assert got.tolist() == [0, 2, 1, 2]
    with pytest.raises(EdgeLstmError, match="classes the model does not know: y"):
        align_labels(y, ["normal", "x", "y"], ["normal", "x"])


def test_other_data_is_scored_with_the_models_normalization(
    tiny_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """New data gets its own split statistics; the model must still see its own scaling: the
    windows evaluate feeds the model are the data's readings scaled with the model's statistics
    (not the data's), and the metrics are those of the model's predictions on them."""
    from edge_lstm.config import config_from_dict
    from edge_lstm.data.prepare import prepare_data
    from edge_lstm.metrics import compute_metrics
    from edge_lstm.reporting import evaluate as evaluate_module
    from edge_lstm.simulate import write_dataset

    data = write_dataset(tmp_path / "other.parquet", seed=7, runs_per_class=4, run_length=200)
    shifted = pd.read_parquet(data)
    shifted["temp_oil"] += 5.0
    shifted.to_parquet(data)

    fed: list[np.ndarray] = []  # what evaluate hands the model

    def spying_open(path: Path):
        predictor = open_predictor(path)
        predict = predictor.predict_logits
        predictor.predict_logits = lambda x: fed.append(np.array(x)) or predict(x)
        return predictor

    monkeypatch.setattr(evaluate_module, "open_predictor", spying_open)
    result = evaluate_artifact(
        tiny_teacher, data_path=data, out_dir=tmp_path / "eval", baseline=False
    )
    assert json.loads(result.metrics_path.read_text())["data"] == str(data.resolve())

    # the direct computation: the data's test windows back to raw readings, then the model's z-score
    model = open_predictor(tiny_teacher)
    prepared = prepare_data(config_from_dict(model.config), data)
    assert prepared.features == model.features and prepared.classes == model.classes
    data_x, labels = prepared.test.x, prepared.test.y
    raw = data_x * prepared.normalization.std + prepared.normalization.mean
    model_x = (raw - model.normalization.mean) / model.normalization.std
    (seen,) = fed
    np.testing.assert_allclose(seen, model_x, atol=1e-4)

    # the data's own statistics would have fed other windows and given other probabilities
    oil = model.features.index("temp_oil")
    assert np.abs(seen[..., oil] - data_x[..., oil]).mean() > 0.5
    model_probs = model.predict_proba(model_x)
    assert np.abs(model_probs - model.predict_proba(data_x)).max() > 1e-2

    expected = compute_metrics(model_probs, labels, model.classes)
    assert result.metrics["n"] == len(labels) > 0
    assert result.metrics["confusion_matrix"] == expected["confusion_matrix"]
    assert result.metrics["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-6)
    assert result.metrics["roc_auc_macro"] == pytest.approx(expected["roc_auc_macro"], abs=1e-6)


def test_engine_without_tensorrt_is_one_line_exit_2(tiny_deploy: Path, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message where it is missing")
    from runtime.manifest import Artifact, Manifest

    folder = tmp_path / "deploy"
    folder.mkdir()
    for f in tiny_deploy.iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "step.fp16.engine").write_bytes(b"not really an engine")
    manifest = Manifest.load(folder)
    manifest.add_artifact(
        folder, "step.trt-fp16", Artifact("step.fp16.engine", "step", "fp16", "tensorrt")
    )
    manifest.save(folder)
    _assert_one_line_error(_run(str(folder / "step.fp16.engine")), "TensorRT")


def _interval_holds(interval: dict, estimate: float) -> None:
    assert interval["estimate"] == pytest.approx(estimate, abs=1e-9)
    assert interval["low"] <= interval["estimate"] <= interval["high"]


def _runs_through_the_gateway(deploy: Path, data: Path, runs: set[str]) -> list[dict]:
    """The `raised`/`cleared` events the gateway's stream engine and debouncer produce for
    these runs (one device each), as alert bodies."""
    import collections

    from runtime.backends.base import open_backend
    from runtime.config import DebounceConfig
    from runtime.debounce import Debouncer
    from runtime.parse import Readings
    from runtime.replay import load_runs
    from runtime.streams import StreamEngine

    manifest = Manifest.load(deploy)
    counts: collections.Counter = collections.Counter()
    engine = StreamEngine(
        manifest,
        sample_period_s=0.1,
        device_queue=100_000,
        max_batch=256,
        count=lambda name, n: counts.update({name: n}),
    )
    for run in load_runs(data, manifest.features)[1]:
        if run.run_id in runs:
            engine.add(run.run_id, Readings(run.ts, run.values), 0.0)
    backend = open_backend(deploy, manifest)
    rule = DebounceConfig()
    debouncer = Debouncer(rule.k, rule.threshold)
    events = []
    while engine.pending_readings:
        for window in engine.step_round(backend)[0]:
            event = debouncer.update(window.device_id, window.probs)
            if event is not None:
                events.append(
                    {
                        "event": event.kind,
                        "device_id": window.device_id,
                        "class": manifest.classes[event.class_index],
                        "window_end_ts": window.end_ts,
                    }
                )
    assert not counts
    return events


def test_onnx_report_scores_what_the_gateway_serves(
    tiny_deploy: Path, tiny_data: Path, tiny_config, prepared_tiny, tiny_baseline, tmp_path: Path
):
    """Intervals, onset/steady, calibration at the manifest's temperature, detection equal to
    the gateway's own stream engine and debouncer on the same runs, and the window baseline
    fitted on the same training split, scored on the same windows."""
    from edge_lstm.calibration import calibration_figures
    from edge_lstm.metrics import compute_metrics
    from edge_lstm.reporting.detection import detections
    from edge_lstm.reporting.recordings import run_truths

    result = evaluate_artifact(tiny_deploy / "step.onnx", out_dir=tmp_path / "eval")
    report = json.loads(result.metrics_path.read_text())
    prepared = prepared_tiny
    test = prepared.test
    runs = sorted(set(test.run_ids.astype(str).tolist()))

    _interval_holds(report["intervals"]["macro_f1"], report["macro_f1"])
    _interval_holds(report["intervals"]["accuracy"], report["accuracy"])
    assert report["intervals"]["macro_f1"]["units"] == len(runs)
    onset, steady = report["onset"], report["steady"]
    assert onset["windows"] == int(test.onset.sum()) > 0
    assert onset["windows"] + steady["windows"] == report["n"] == len(test)
    probs = open_predictor(tiny_deploy / "step.onnx").predict_proba(test.x)
    hits = probs.argmax(axis=1) == test.y
    assert np.trace(report["confusion_matrix"]) == hits.sum()
    _interval_holds(onset["accuracy"], hits[test.onset].mean())
    _interval_holds(steady["accuracy"], hits[~test.onset].mean())
    onset_runs = len(set(test.run_ids[test.onset].tolist()))
    assert onset["runs"] == onset["accuracy"]["units"] == onset_runs

    manifest = Manifest.load(tiny_deploy)
    calibration = report["calibration"]
    assert calibration["temperature"] == manifest.temperature != 1.0
    assert calibration["temperature_source"] == "manifest.json"
    assert calibration["after"] == pytest.approx(calibration_figures(probs, test.y), abs=1e-6)
    assert calibration["before"] != calibration["after"]

    detection = report["detection"]
    assert detection["debounce"] == {"k": 3, "threshold": 0.6}
    assert detection["hop_readings"] == tiny_config.data.stride == manifest.hop
    truths = run_truths(prepared.readings, "run_id", "ts", "label", runs)
    live = detections(
        _runs_through_the_gateway(tiny_deploy, tiny_data, set(runs)), truths, "normal"
    )
    by_run = {row["run_id"]: row for row in detection["runs"]}
    assert set(by_run) == set(runs)
    for row in live:
        offline = by_run[row.run_id]
        assert (offline["first_alert"], offline["false_alarms"]) == (
            row.first_alert,
            row.false_alarms,
        )
        assert offline["delay_s"] == pytest.approx(row.delay_s, abs=1e-6)
    faulty = [r for r in live if r.onset_ts is not None]
    assert detection["fault_runs"] == len(faulty) > 0

    baseline = report["baseline"]
    expected = compute_metrics(tiny_baseline.predict_proba(test.x), test.y, prepared.classes)
    assert baseline["source"].startswith("fitted on the train split")
    assert baseline["confusion_matrix"] == expected["confusion_matrix"]
    assert baseline["onset"]["windows"] == onset["windows"]
    assert baseline["detection"]["fault_runs"] == detection["fault_runs"]

    # model − baseline, paired over the same runs: the estimates are the differences of the rows
    paired = report["vs_baseline"]
    for name in ("accuracy", "macro_f1"):
        _interval_holds(paired[name], report[name] - baseline[name])
        assert paired[name]["units"] == len(runs)
        assert paired[name]["n_boot"] == report["intervals"][name]["n_boot"]
    base_hits = tiny_baseline.predict_proba(test.x).argmax(axis=1) == test.y
    onset_gap = hits[test.onset].mean() - base_hits[test.onset].mean()
    _interval_holds(paired["onset_accuracy"], onset_gap)
    assert paired["onset_accuracy"]["units"] == onset_runs


def test_a_baseline_stored_beside_a_teacher_is_used(
    tiny_teacher: Path, tiny_baseline, prepared_tiny, tmp_path: Path
):
    import shutil

    teacher = Path(shutil.copytree(tiny_teacher, tmp_path / "teacher"))
    tiny_baseline.save(teacher / "window-baseline")
    out = tmp_path / "eval"
    result = _run(str(teacher), "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    baseline = report["baseline"]
    assert baseline["name"] == BASELINE_NAME
    assert baseline["source"] == f"loaded from {teacher / 'window-baseline'}"
    test = prepared_tiny.test
    predicted = tiny_baseline.predict_proba(test.x).argmax(axis=1)
    assert baseline["accuracy"] == pytest.approx(float(np.mean(predicted == test.y)))
    assert f"baseline {BASELINE_NAME} (loaded from" in result.output
    assert "model − baseline, paired over the same" in result.output
    assert report["vs_baseline"]["accuracy"]["units"] == len(set(test.run_ids.tolist()))
    # a metrics.json of an earlier version has no paired figures: its summary still prints
    older = {k: v for k, v in report.items() if k != "vs_baseline"}
    lines = report_lines(older)
    assert lines[-1].startswith("  ") and not any("paired" in line for line in lines)


def test_detection_states_the_hop_the_split_was_cut_at(tiny_config, tiny_data: Path) -> None:
    """Training windows at a finer train_stride are replayed at that hop, and say so."""
    from edge_lstm.data.prepare import prepare_data
    from edge_lstm.reporting.evaluate import debounce_rule, split_windows

    stride = tiny_config.data.stride
    data = tiny_config.data.model_copy(update={"train_stride": max(1, stride // 2)})
    cfg = tiny_config.model_copy(update={"data": data})
    prepared = prepare_data(cfg, tiny_data)
    rule = debounce_rule(None)
    assert split_windows(prepared, "train", cfg, rule).hop_readings == data.train_stride < stride
    assert split_windows(prepared, "test", cfg, rule).hop_readings == stride
