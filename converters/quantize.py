"""`edgelstm quantize`: int8 variants of a deployment folder's graphs, each accuracy-checked.

dynamic: int8 weights, activations quantized per call (ONNX Runtime's MatMulInteger and
DynamicQuantizeLSTM; its GRU op has no int8 kernel and stays fp32). static: QDQ with ranges
calibrated on real training windows — the form TensorRT consumes for explicit INT8. Only
MatMul/Gemm inputs are quantized, each consumer through its own Q/DQ pair, so the recurrent
state itself (h, c and their element-wise updates) stays fp32: quantizing the state path put c
off by up to 0.75 (docs/ARCHITECTURE.md, "Facts measured"). Weights are per channel in every
mode (`converters.int8_graphs`); the artifact info counts them (`weight_scales`).

The accuracy guard decides on the validation split: a variant whose validation macro-F1 drops
more than the tolerance is refused. The test split is scored too, for the comparison table and
the report, but never decides, so it stays a held-out estimate. Without validation windows the
guard refuses to run unless `guard_split="test"` (`--guard-split test`) says to decide on the
test split, which is then recorded in the artifact info and logged as a warning.

A graph whose recurrent op stays fp32 after quantization (the window graph in static mode, a
GRU's window graph in dynamic mode) is not written: it is no smaller and no faster, so an int8
label on it would mislead. Its target's comparison row then comes from the step graph.

Batch invariance: a gateway batches many devices' readings into one step call. Static scales
are constants, so a window's probabilities do not depend on its neighbours in the call; dynamic
quantization picks each call's activation scale from the whole batch, so they move. Each int8
step artifact records `batch_invariant` and `max_batch_diff` (`int8_graphs.batch_invariance`
on the held-out parity sample), and the batch-invariant static step artifact is the one
recommended for serving once it passes the guard.

static for TensorRT (`--mode static --for tensorrt`, artifact `step.int8-tensorrt`): the step
graph in the Q/DQ form TensorRT's explicit quantization parses, which ONNX Runtime's defaults
are not (an INT32 bias feeding DequantizeLinear, int8 weights with only a DequantizeLinear):
float weights with their own QuantizeLinear/DequantizeLinear pair (AddQDQPairToWeight),
per-channel weight scales, float biases (QuantizeBias off), symmetric int8 activations, no
quantized outputs (OpTypesToExcludeOutputQuantization), and the recurrent state excluded: the
MatMuls that read the incoming state (h_{t-1} @ W_hh) stay fp32, so no Q/DQ touches h, c, their
updates or h_out/c_out. `check_tensorrt_qdq` verifies all of it on the written file. The run
also stores the parity sample (stratified test windows) that `build-engine` checks engines on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.export_onnx import REJECTED_DIR, prepare_matching_data
from converters.int8_graphs import (
    QUANTIZED_OPS,
    batch_invariance,
    calibration_feeds,
    check_tensorrt_qdq,
    dynamic_file,
    fp32_recurrent_ops,
    pick_calibration_windows,
    static_file,
    weight_scales,
)
from converters.onnx_files import finish_onnx, onnx_metadata, op_counts, weight_bytes
from converters.outcome import Outcome
from converters.parity import (
    PARITY_SAMPLE_FILE,
    PARITY_SAMPLE_KEY,
    ParitySample,
    StepGraph,
    graph_latency,
    ort_session,
    sample_windows,
    save_parity_sample,
    step_graph_logits,
    window_logits,
)
from converters.staging import Stage, staged
from converters.targets import Target
from edge_lstm.config import Config, config_from_dict
from edge_lstm.units import human_size
from runtime.manifest import (
    MANIFEST_FILE,
    Artifact,
    Manifest,
)

log = logging.getLogger(__name__)

GUARD_SPLITS = ("val", "test")
_SPLIT_NAMES = {"val": "validation", "test": "test"}


def _config(manifest: Manifest, deploy_dir: Path) -> Config:
    raw = manifest.provenance.get("config")
    if not isinstance(raw, dict):
        raise ConverterError(
            f"{deploy_dir}/manifest.json has no provenance config, so the training and test "
            "windows cannot be rebuilt; re-export with `edgelstm export`"
        )
    return config_from_dict(raw, f"{deploy_dir}/manifest.json provenance")


def _logits(path: Path, kind: str, manifest: Manifest, x: np.ndarray) -> np.ndarray:
    """Logits of a split: window graphs directly, step graphs driven W steps."""
    if kind == "window":
        return window_logits(ort_session(path), x)
    return step_graph_logits(StepGraph(ort_session(path), manifest), x)


def _scores(manifest: Manifest, kind: str, fp32: Path, int8: Path, windows: Any) -> dict[str, Any]:
    """macro-F1 of the fp32 and the int8 graph, the int8 accuracy and their argmax agreement
    on one split's windows."""
    from edge_lstm.metrics import compute_metrics, softmax

    ref = _logits(fp32, kind, manifest, windows.x)
    out = _logits(int8, kind, manifest, windows.x)
    before = compute_metrics(softmax(ref), windows.y, manifest.classes)
    after = compute_metrics(softmax(out), windows.y, manifest.classes)
    return {
        "macro_f1_fp32": before["macro_f1"],
        "macro_f1": after["macro_f1"],
        "macro_f1_drop_points": (before["macro_f1"] - after["macro_f1"]) * 100,
        "accuracy": after["accuracy"],
        "argmax_agreement": float((ref.argmax(axis=1) == out.argmax(axis=1)).mean()),
        "windows": len(windows.y),
    }


def _evaluate(job: _Inputs, kind: str, fp32: Path, int8: Path) -> dict[str, Any]:
    """Size, weight scales, test-split scores (for the table), the guard's figures on its
    split, latency and, for a step graph, batch invariance, next to the fp32 source."""
    manifest = job.manifest
    before, after = op_counts(fp32), op_counts(int8)
    test = _scores(manifest, kind, fp32, int8, job.data.test)
    guard = _scores(manifest, kind, fp32, int8, job.data.split(job.guard_split))
    size_fp32, size_int8 = fp32.stat().st_size, int8.stat().st_size
    info: dict[str, Any] = {
        "graph": kind,
        "source": fp32.name,
        "size_bytes_fp32": size_fp32,
        "size_bytes": size_int8,
        "size_ratio": size_int8 / size_fp32,
        "weight_bytes_fp32": weight_bytes(fp32),
        "weight_bytes": weight_bytes(int8),
        "weight_ratio": weight_bytes(int8) / weight_bytes(fp32),
        "weight_scales": weight_scales(int8),
        **{k: v for k, v in test.items() if k != "windows"},
        "test_windows": test["windows"],
        "guard": {
            "split": job.guard_split,
            **guard,
            "tolerance_points": job.tolerance,
            "passed": guard["macro_f1_drop_points"] <= job.tolerance,
        },
        "quantized_ops": {op: n for op, n in after.items() if op in QUANTIZED_OPS},
        "op_counts_fp32": before,
        "op_counts": after,
        "latency_ms_fp32": graph_latency(fp32, manifest, kind, job.data.test.x),
        "latency_ms": graph_latency(int8, manifest, kind, job.data.test.x),
    }
    if kind == "step":
        info.update(batch_invariance(int8, manifest, job.held_out.x))
    return info


def _serving_note(name: str, info: dict[str, Any]) -> str:
    """What an accepted step artifact means for serving, from its batch-invariance figure."""
    if info["batch_invariant"]:
        return (
            f"recommended for serving: batch-invariant (a window's probabilities alone and "
            f"batched differ by at most {info['max_batch_diff']:.1g} over "
            f"{info['batch_check_windows']} windows) and within the accuracy guard"
        )
    return (
        f"not batch-invariant: a window's probabilities move by up to "
        f"{info['max_batch_diff']:.3f} with the windows sharing its step call; serve "
        "step.int8-static (`edgelstm quantize --mode static`) for results that do not depend "
        f"on load, or {name} where that does not matter"
    )


def _add_comparison_rows(manifest: Manifest, target: Target, results: dict[str, dict]) -> None:
    """The target's row in the comparison table: from its window graph, or from its step graph
    (driven W steps) when the window graph was not worth quantizing.

    The TensorRT form adds none: it is build-engine's input, and the engines get their rows.
    """
    from converters.comparison import ComparisonRow, update_comparison

    table = manifest.provenance.get("comparison")
    if not table or "window" not in target.sources or not results:
        return
    step = results.get("step")
    step_ms = (
        ""
        if step is None
        else f"{step['latency_ms']['b1']['median_ms']:.3f} ms/step at b1, "
        f"{step['latency_ms']['b256']['median_ms']:.3f} ms at b256"
    )
    if "window" in results:
        graph, name = results["window"], target.artifact_name("window")
        notes = f"{target.name}; window graph ops {graph['quantized_ops'] or 'none quantized'}"
        if step is not None:
            notes += (
                f"; step graph {step['size_ratio']:.0%} of fp32 size, macro-F1 "
                f"{step['macro_f1']:.4f}, {step_ms}"
            )
        latency = {b: graph["latency_ms"][b]["median_ms"] for b in ("b1", "b256")}
    else:
        assert step is not None
        graph, name = step, target.artifact_name("step")
        why = step["not_written"].get(target.artifact_name("window"), "refused by the guard")
        notes = (
            f"{target.name}; step graph driven W steps (window graph not written: {why}); {step_ms}"
        )
        latency = {"b1": None, "b256": None}  # a step call scores no window: see the notes
    row = ComparisonRow(
        model=manifest.model_name,
        runtime="onnxruntime",
        precision=target.precision,
        macro_f1=graph["macro_f1"],
        accuracy=graph["accuracy"],
        parameters=None,
        size_bytes=manifest.artifacts[name].size_bytes,
        latency_ms_b1=latency["b1"],
        latency_ms_b256=latency["b256"],
        notes=notes,
    )
    update_comparison(Path(table), [row])


def _ms(latency: dict[str, Any], batch: str) -> str:
    return f"{latency[batch]['median_ms']:.3f}"


def result_lines(results: dict[str, dict[str, Any]], skipped: dict[str, str]) -> list[str]:
    """The table `edgelstm quantize` prints: one row per int8 artifact, fp32 -> int8 (test
    split), then per artifact its ops, the guard's figures and what it means for serving, and
    the graphs not written."""
    header = (
        f"{'artifact':<22} {'size fp32 -> int8':>36} {'test macro-F1 fp32 -> int8':>28} "
        f"{'agree':>6} {'ms b1 fp32/int8':>16} {'ms b256 fp32/int8':>18}"
    )
    lines = [header]
    for name, r in results.items():
        size = (
            f"{human_size(r['size_bytes_fp32'])} -> {human_size(r['size_bytes'])} "
            f"({r['size_ratio']:.0%}; weights {r['weight_ratio']:.0%})"
        )
        f1 = f"{r['macro_f1_fp32']:.4f} -> {r['macro_f1']:.4f}"
        b1 = f"{_ms(r['latency_ms_fp32'], 'b1')}/{_ms(r['latency_ms'], 'b1')}"
        b256 = f"{_ms(r['latency_ms_fp32'], 'b256')}/{_ms(r['latency_ms'], 'b256')}"
        lines.append(
            f"{name:<22} {size:>36} {f1:>28} {r['argmax_agreement']:>6.1%} {b1:>16} {b256:>18}"
        )
    for name, r in results.items():
        ops = ", ".join(f"{op} x{n}" for op, n in r["quantized_ops"].items()) or "none"
        scales = r["weight_scales"]
        per_tensor = (
            f", per tensor: {', '.join(scales['per_tensor'])}" if scales["per_tensor"] else ""
        )
        lines.append(
            f"{name}: quantized ops {ops}; {scales['per_channel']} weights per channel{per_tensor}"
        )
        g = r["guard"]
        lines.append(
            f"{name}: accuracy guard on the {_SPLIT_NAMES[g['split']]} split ({g['windows']} "
            "windows): macro-F1 "
            f"{g['macro_f1_fp32']:.4f} -> {g['macro_f1']:.4f} ({-g['macro_f1_drop_points']:+.2f} "
            f"points; tolerance {g['tolerance_points']:g})"
        )
        if "serving" in r:
            lines.append(f"{name}: {r['serving']}")
    lines += [f"{name}: not written: {why}" for name, why in skipped.items()]
    lines.append("latency: ms per call, 1 thread; window graphs per window, step graphs per step")
    return lines


# writes the int8 variant of the fp32 graph `src` (of kind "window"/"step") to `dst`
Writer = Callable[[str, Path, Path], None]


@dataclass
class _Inputs:
    """A deployment folder, the config and data it was exported from, the tolerance and the
    split the accuracy guard decides on."""

    target: Target
    deploy_dir: Path
    manifest: Manifest
    cfg: Config
    data: Any
    tolerance: float
    guard_split: str

    @classmethod
    def load(
        cls,
        target: Target,
        deploy_dir: Path,
        tolerance_points: float | None,
        data_path: Path | None,
        guard_split: str | None,
    ) -> _Inputs:
        manifest = Manifest.load(deploy_dir)
        cfg = _config(manifest, deploy_dir)
        tolerance = cfg.quantize.tolerance_points if tolerance_points is None else tolerance_points
        if tolerance < 0:
            raise ConverterError(f"--tolerance must be >= 0 macro-F1 points, got {tolerance:g}")
        data = prepare_matching_data(cfg, data_path, manifest)
        return cls(
            target, deploy_dir, manifest, cfg, data, tolerance, _guard_split(data, guard_split)
        )

    @cached_property
    def held_out(self) -> ParitySample:
        """The stratified test and validation windows (the parity sample's recipe)."""
        return sample_windows([self.data.test, self.data.val], "test and validation splits")


def _guard_split(data: Any, asked: str | None) -> str:
    """The split the accuracy guard decides on: validation, or the test split when asked for
    explicitly (a warning: its figures are then no longer held out from the decision)."""
    split = asked or "val"
    if split not in GUARD_SPLITS:
        raise ConverterError(
            f"--guard-split must be one of {', '.join(GUARD_SPLITS)}, not {split!r}"
        )
    if split == "test":
        log.warning(
            "the accuracy guard decides on the test split (--guard-split test): its int8 "
            "figures are no longer an unbiased estimate"
        )
    elif len(data.val.y) == 0:
        raise ConverterError(
            "the data has no validation windows, and the accuracy guard decides on validation "
            "windows so that the test split stays held out; give the config a validation split "
            "(data.split.val > 0) and export again, or pass --guard-split test to decide on the "
            "test split"
        )
    return split


def _write_graph(job: _Inputs, stage: Stage, kind: str, write: Writer) -> tuple[str, list[str]]:
    """Writes the int8 variant of one graph into the stage; returns its file and the recurrent
    ops it left fp32."""
    src = job.manifest.verified_path(job.deploy_dir, kind)
    file = job.target.file_name(kind)
    write(kind, src, stage.path / file)
    return file, fp32_recurrent_ops(stage.path / file)


def _quantize(
    job: _Inputs,
    write: Writer,
    extra_info: dict[str, Any],
    also: Callable[[Stage], None] | None = None,
) -> Outcome:
    """Writes the int8 variants of the window and step graphs and records them in the manifest;
    `also(stage)` writes more into the stage before the manifest is saved.

    A graph whose recurrent op stayed fp32 is not written (module docstring); the accepted
    artifacts' info says so under `not_written`. A variant whose macro-F1 on the guard's split
    drops more than the tolerance is moved to `rejected/`, left out of the manifest, and
    reported with ConverterError once the accepted ones are in place.
    """
    target, manifest, deploy_dir = job.target, job.manifest, job.deploy_dir
    accepted: dict[str, dict[str, Any]] = {}
    rejected: list[str] = []
    skipped: dict[str, str] = {}
    with staged(deploy_dir, "quantize") as stage:
        for kind in (s for s in target.sources if s in manifest.artifacts):
            name = target.artifact_name(kind)
            manifest.artifacts.pop(name, None)
            file, fp32_ops = _write_graph(job, stage, kind, write)
            if fp32_ops:
                skipped[name] = f"recurrent op {'/'.join(fp32_ops)} stays fp32: no int8 benefit"
                stage.remove(deploy_dir / file)
                stage.remove(deploy_dir / REJECTED_DIR / file)
                continue
            finish_onnx(stage.path / file, onnx_metadata(manifest, kind, target.precision))
            src = manifest.verified_path(deploy_dir, kind)
            info = {**_evaluate(job, kind, src, stage.path / file), "mode": target.variant}
            info.update(extra_info)
            if not info["guard"]["passed"]:
                stage.keep(file, into=REJECTED_DIR)
                stage.remove(deploy_dir / file)
                g = info["guard"]
                rejected.append(
                    f"{name} (macro-F1 {g['macro_f1_fp32']:.4f} -> {g['macro_f1']:.4f}, "
                    f"-{g['macro_f1_drop_points']:.2f} points)"
                )
                continue
            if kind == "step" and target.variant != "tensorrt":
                info["serving"] = _serving_note(name, info)
            artifact = Artifact(file=file, kind=kind, precision=target.precision, info=info)
            manifest.add_artifact(stage.path, name, artifact)
            stage.keep(file)
            stage.remove(deploy_dir / REJECTED_DIR / file)
            accepted[name] = info
        if not accepted and not rejected:
            raise ConverterError(
                f"int8 ({target.variant}) would gain nothing here: {'; '.join(skipped.values())} "
                "in every graph; try --mode dynamic or deploy fp32"
            )
        for info in accepted.values():
            info["not_written"] = skipped
        if also is not None:
            also(stage)
        manifest.save(stage.path)
        stage.keep(MANIFEST_FILE)
    _add_comparison_rows(manifest, target, {a["graph"]: a for a in accepted.values()})
    if rejected:
        raise ConverterError(
            f"int8 ({target.variant}) lost more than {job.tolerance:g} macro-F1 points on the "
            f"{_SPLIT_NAMES[job.guard_split]} split: {'; '.join(rejected)}; kept aside in "
            f"{deploy_dir / REJECTED_DIR} and not listed in the manifest (try --mode static, "
            "more --calibration-windows, or deploy fp32)"
        )
    return Outcome(
        folder=deploy_dir,
        files=[manifest.artifacts[name].file for name in accepted],
        next=target.next_step(deploy_dir),
        details=result_lines(accepted, skipped),
        result=accepted,
    )


def quantize_int8_dynamic(
    target: Target,
    deploy_dir: Path,
    *,
    tolerance_points: float | None = None,
    data_path: Path | None = None,
    guard_split: str | None = None,
) -> Outcome:
    """The `onnx-int8-dynamic` target: int8 weights, activations quantized per call.

    `tolerance_points` defaults to quantize.tolerance_points of the exported config,
    `guard_split` to "val" (module docstring).
    """
    job = _Inputs.load(target, deploy_dir, tolerance_points, data_path, guard_split)
    return _quantize(job, lambda _kind, src, dst: dynamic_file(src, dst), {})


def _calibration_set(job: _Inputs, calibration_windows: int | None) -> np.ndarray:
    """Training windows to calibrate on; their number defaults to the exported config's
    quantize.calibration_windows."""
    n = calibration_windows or job.cfg.quantize.calibration_windows
    return pick_calibration_windows(job.cfg, job.data.train.x, n)


def quantize_int8_static(
    target: Target,
    deploy_dir: Path,
    *,
    calibration_windows: int | None = None,
    tolerance_points: float | None = None,
    data_path: Path | None = None,
    guard_split: str | None = None,
) -> Outcome:
    """The `onnx-int8-static` target: QDQ with ranges calibrated on training windows.

    `calibration_windows` defaults to quantize.calibration_windows of the exported config,
    `guard_split` to "val" (module docstring).
    """
    job = _Inputs.load(target, deploy_dir, tolerance_points, data_path, guard_split)
    windows = _calibration_set(job, calibration_windows)

    def write(kind: str, src: Path, dst: Path) -> None:
        static_file(src, dst, calibration_feeds(src, kind, job.manifest, windows))

    return _quantize(job, write, {"calibration_windows": len(windows)})


def quantize_int8_tensorrt(
    target: Target,
    deploy_dir: Path,
    *,
    calibration_windows: int | None = None,
    tolerance_points: float | None = None,
    data_path: Path | None = None,
    guard_split: str | None = None,
) -> Outcome:
    """The `onnx-int8-tensorrt` target: the step graph's static QDQ in TensorRT's form (module
    docstring), accuracy-checked like the others, and the parity sample for `build-engine`.

    `calibration_windows` defaults to quantize.calibration_windows of the exported config,
    `guard_split` to "val" (module docstring).
    """
    job = _Inputs.load(target, deploy_dir, tolerance_points, data_path, guard_split)
    windows = _calibration_set(job, calibration_windows)
    state_names = job.manifest.state_names
    extra: dict[str, Any] = {"calibration_windows": len(windows), "for": "tensorrt"}

    def write(kind: str, src: Path, dst: Path) -> None:
        feeds = calibration_feeds(src, kind, job.manifest, windows)
        extra["fp32_nodes"] = static_file(src, dst, feeds, True, state_names)
        extra["qdq"] = check_tensorrt_qdq(dst, state_names)

    def keep_parity_sample(stage: Stage) -> None:
        entry = save_parity_sample(stage.path, job.held_out, job.manifest)
        stage.keep(PARITY_SAMPLE_FILE)
        job.manifest.metrics[PARITY_SAMPLE_KEY] = entry

    return _quantize(job, write, extra, also=keep_parity_sample)
