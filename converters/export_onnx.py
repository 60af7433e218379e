"""`edgelstm export`: a checkpoint becomes a parity-checked deployment folder.

Writes model.onnx (window graph), step.onnx (the student's loop-free cell) and manifest.json.
RNN graphs use the TorchScript exporter (`dynamo=False`): the torch.export-based exporter has
emitted GRU with a wrong `linear_before_reset` (pytorch/pytorch#189225) and adds gate-reordering
nodes that stop ONNX Runtime from quantizing the LSTM.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.parity import (
    StepGraph,
    compare_logits,
    graph_latency,
    ort_session,
    step_graph_logits,
    torch_logits,
    window_logits,
)
from edge_lstm.config import Config, config_from_dict
from edge_lstm.metrics import softmax
from runtime.errors import ManifestError
from runtime.manifest import (
    LOGITS,
    STATE_OUTPUT_SUFFIX,
    STEP_INPUT,
    WINDOW_INPUT,
    Artifact,
    Manifest,
)

log = logging.getLogger(__name__)

WINDOW_FILE = "model.onnx"
STEP_FILE = "step.onnx"
LOOP_OPS = frozenset({"Loop", "Scan", "If", "GRU", "LSTM", "RNN"})
REJECTED_DIR = "rejected"


def _float32_json(values: list[float]) -> str:
    """JSON with 9 significant digits: exact for float32, half the length of Python's repr."""
    return json.dumps([float(f"{v:.9g}") for v in values])


def onnx_metadata(manifest: Manifest, graph: str, precision: str = "fp32") -> dict[str, str]:
    """The manifest fields an .onnx file carries in metadata_props, so a lone file explains
    itself (values are strings; lists are JSON)."""
    return {
        "graph": graph,
        "precision": precision,
        "model_name": manifest.model_name,
        "model_version": manifest.model_version,
        "model_kind": manifest.model_kind,
        "features": json.dumps(manifest.features),
        "classes": json.dumps(manifest.classes),
        "norm_mean": _float32_json(manifest.norm_mean),
        "norm_std": _float32_json(manifest.norm_std),
        "window": str(manifest.window),
        "hop": str(manifest.hop),
        "cell": manifest.cell or "",
        "layers": str(manifest.layers),
        "hidden_size": str(manifest.hidden_size),
        "state_names": json.dumps(list(manifest.state_names)),
    }


def finish_onnx(path: Path, props: dict[str, str]) -> None:
    """Sets metadata_props, drops value_info (shape hints ONNX Runtime infers again at load;
    the quantizer adds them) and re-checks the file with onnx.checker."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def weight_bytes(path: Path) -> int:
    """Bytes of a graph's initializers (weights, biases, scales), without the graph around them."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type a graph has (Constant nodes left out)."""
    import onnx

    nodes = onnx.load(str(path)).graph.node
    return dict(sorted(Counter(n.op_type for n in nodes if n.op_type != "Constant").items()))


@contextmanager
def _quiet_torchscript_exporter() -> Iterator[None]:
    """Hides warnings that do not apply here: the exporter's deprecation notice, its RNN
    batch-size warning (about initial states captured at trace time; the zero state is built
    from the input's shape, and parity runs another batch size), nn.GRU/LSTM's tracer
    warnings about their own input-size checks, and a notice about torch's internal logging."""
    from torch.jit import TracerWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        warnings.filterwarnings("ignore", category=TracerWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed")
        yield


def _export_window(model: Any, path: Path, x: np.ndarray, opset: int) -> None:
    import torch

    with _quiet_torchscript_exporter():
        torch.onnx.export(
            model,
            (torch.from_numpy(x),),
            str(path),
            input_names=[WINDOW_INPUT],
            output_names=[LOGITS],
            dynamic_axes={WINDOW_INPUT: {0: "batch"}, LOGITS: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _simplify(path: Path) -> None:
    """Folds the exporter's shape arithmetic (Shape/Gather/Div feeding Slice) into constants
    with onnxscript's optimizer; on the demo student a step call gets 30-40% cheaper. Where
    onnxscript is not installed the graph stays as exported (parity checks either way)."""
    try:
        from onnxscript import optimizer
    except ImportError:
        log.info("onnxscript is not installed: %s keeps the exporter's shape ops", path.name)
        return
    import onnx

    onnx.save(optimizer.optimize(onnx.load(str(path))), str(path))


def _step_module(student: Any) -> Any:
    """Wraps Student.step as forward(x, *state) -> (logits, *new_state) for tracing."""
    from torch import nn

    class StepModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = student

        def forward(self, x: Any, *state: Any) -> tuple[Any, ...]:
            logits, new_state = self.student.step(x, tuple(state))
            return (logits, *new_state)

    return StepModule().eval()


def _export_step(student: Any, path: Path, n_features: int, opset: int) -> None:
    import torch

    names = tuple(student.state_names)
    dynamic = {STEP_INPUT: {0: "batch"}, LOGITS: {0: "batch"}}
    for name in names:
        dynamic[name] = {1: "batch"}
        dynamic[name + STATE_OUTPUT_SUFFIX] = {1: "batch"}
    example = (torch.zeros(2, n_features), *student.initial_state(2))
    with _quiet_torchscript_exporter():
        torch.onnx.export(
            _step_module(student),
            example,
            str(path),
            input_names=[STEP_INPUT, *names],
            output_names=[LOGITS, *(n + STATE_OUTPUT_SUFFIX for n in names)],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    loops = sorted(set(op_counts(path)) & LOOP_OPS)
    if loops:
        raise ConverterError(
            f"the step graph contains {loops}; Student.step must be plain gate arithmetic so the "
            "runtime, the int8 quantizer and TensorRT see a loop-free cell"
        )


def _comparison_path(checkpoint_dir: Path) -> Path | None:
    """The comparison table next to the checkpoint (student/) or one up (student/baseline/)."""
    for folder in (checkpoint_dir, checkpoint_dir.parent):
        if (folder / "comparison.json").is_file():
            return (folder / "comparison.json").resolve()
    return None


def _remove_previous_export(out_dir: Path) -> None:
    """Deletes the artifacts an earlier manifest listed: they belong to another model."""
    try:
        previous = Manifest.load(out_dir)
    except ManifestError:
        return
    for art in previous.artifacts.values():
        (out_dir / art.file).unlink(missing_ok=True)
    shutil.rmtree(out_dir / REJECTED_DIR, ignore_errors=True)


def _versions(opset: int) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
    }


def prepare_matching_data(cfg: Config, data_path: Path | None, manifest: Manifest) -> Any:
    """The prepared data, after checking it is what the model was trained on: same features
    and classes, and the same train-split normalization (else the figures would be wrong)."""
    from edge_lstm.data.prepare import prepare_data

    data = prepare_data(cfg, data_path)
    source = data_path or cfg.data.path
    if list(data.features) != manifest.features or list(data.classes) != manifest.classes:
        raise ConverterError(
            f"{source} has other features or classes than the model; pass the sensor logs it "
            "was trained on with --data"
        )
    drift = max(
        float(np.abs(data.normalization.mean - np.asarray(manifest.norm_mean)).max()),
        float(np.abs(data.normalization.std - np.asarray(manifest.norm_std)).max()),
    )
    if drift > 1e-3 * (1 + float(np.abs(manifest.norm_std).max())):
        raise ConverterError(
            f"{source} is not the data the model was trained on: its train-split "
            f"normalization differs by up to {drift:.3g}; pass the training logs with --data"
        )
    if len(data.test.x) == 0:
        raise ConverterError(f"{source}: the test split has no windows to check the model on")
    return data


def _new_manifest(meta: Any, ckpt_dir: Path, opset: int) -> Manifest:
    student = meta.kind == "student"
    model_cfg = meta.model_config
    comparison = _comparison_path(ckpt_dir)
    return Manifest(
        model_name=meta.name,
        model_version=meta.version,
        model_kind=meta.kind,
        features=list(meta.features),
        norm_mean=[float(v) for v in meta.normalization["mean"]],
        norm_std=[float(v) for v in meta.normalization["std"]],
        classes=list(meta.classes),
        window=int(meta.window),
        hop=int(meta.hop),
        cell=model_cfg["cell"] if student else None,
        layers=int(model_cfg["layers"]) if student else 0,
        hidden_size=int(model_cfg["hidden_size"]) if student else 0,
        sample_period_s=float(meta.sample_period_s),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        provenance={
            "config": meta.config,
            "checkpoint": str(ckpt_dir.resolve()),
            "comparison": str(comparison) if comparison else None,
            "exported_with": _versions(opset),
        },
    )


def _add_comparison_rows(manifest: Manifest, n_parameters: int) -> None:
    from converters.comparison import ComparisonRow, update_comparison

    table = manifest.provenance.get("comparison")
    if not table:
        return
    test = manifest.metrics["onnx_test"]
    window = manifest.artifacts["window"]
    notes = "window graph"
    if "step" in manifest.artifacts:
        step_ms = manifest.artifacts["step"].info["latency_ms"]
        notes = (
            f"step graph {step_ms['b1']['median_ms']:.3f} ms/step at b1, "
            f"{step_ms['b256']['median_ms']:.3f} ms at b256"
        )
    latency = window.info["latency_ms"]
    row = ComparisonRow(
        model=manifest.model_name,
        runtime="onnxruntime",
        precision="fp32",
        macro_f1=test["macro_f1"],
        accuracy=test["accuracy"],
        parameters=n_parameters,
        size_bytes=window.size_bytes,
        latency_ms_b1=latency["b1"]["median_ms"],
        latency_ms_b256=latency["b256"]["median_ms"],
        notes=notes,
    )
    update_comparison(Path(table), [row])


def _export_checked(
    model: Any, stage: Path, manifest: Manifest, test_x: np.ndarray, cfg: Config
) -> tuple[dict[str, str], dict[str, Any]]:
    """Writes the graphs into `stage` and checks each against PyTorch on the first
    export.parity_windows test windows; returns {graph: file} and the parity figures."""
    x = test_x[: cfg.export.parity_windows]
    reference = torch_logits(model, x)
    tolerance = cfg.export.parity_tolerance
    _export_window(model, stage / WINDOW_FILE, test_x[:2], cfg.export.opset)
    _simplify(stage / WINDOW_FILE)
    files = {"window": WINDOW_FILE}
    parity = {
        "window": compare_logits(
            "window", reference, window_logits(ort_session(stage / WINDOW_FILE), x), tolerance
        )
    }
    if manifest.model_kind == "student":
        _export_step(model, stage / STEP_FILE, manifest.n_features, cfg.export.opset)
        _simplify(stage / STEP_FILE)
        graph = StepGraph(
            ort_session(stage / STEP_FILE),
            manifest.state_names,
            manifest.layers,
            manifest.hidden_size,
        )
        parity["step"] = compare_logits(
            f"step (driven {manifest.window} times)",
            reference,
            step_graph_logits(graph, x),
            tolerance,
        )
        files["step"] = STEP_FILE
    for graph_name, file in files.items():
        finish_onnx(stage / file, onnx_metadata(manifest, graph_name))
    return files, parity


def export(
    checkpoint: Path,
    out_dir: Path,
    cfg: Config | None = None,
    *,
    data_path: Path | None = None,
) -> Manifest:
    """Exports a checkpoint into a deployment folder after checking parity on test windows.

    `cfg` defaults to the config stored in the checkpoint (its export section sets opset,
    parity tolerance and window count); `data_path` overrides where the test windows come from.
    Nothing is left in `out_dir` when a check fails.
    """
    from edge_lstm.checkpoint import load_checkpoint
    from edge_lstm.metrics import compute_metrics

    ckpt = load_checkpoint(Path(checkpoint))
    meta, model = ckpt.meta, ckpt.model
    cfg = cfg or config_from_dict(meta.config, f"{ckpt.path}/model.json")
    opset = cfg.export.opset
    manifest = _new_manifest(meta, ckpt.path, opset)
    data = prepare_matching_data(cfg, data_path, manifest)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        files, parity = _export_checked(model, stage, manifest, data.test.x, cfg)
        window_session = ort_session(stage / WINDOW_FILE)
        probs = softmax(window_logits(window_session, data.test.x))
        test_metrics = compute_metrics(probs, data.test.y, manifest.classes)
        manifest.metrics = {
            "parity": parity,
            "parity_tolerance": cfg.export.parity_tolerance,
            "onnx_test": {k: test_metrics[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1")},
            "checkpoint": meta.metrics,
        }
        infos = {
            graph_name: {
                "op_counts": op_counts(stage / file),
                "latency_ms": graph_latency(stage / file, manifest, graph_name, data.test.x),
            }
            for graph_name, file in files.items()
        }
        _remove_previous_export(out_dir)
        for graph_name, file in files.items():
            (stage / file).replace(out_dir / file)
            manifest.add_artifact(
                out_dir,
                graph_name,
                Artifact(file=file, kind=graph_name, precision="fp32", info=infos[graph_name]),
            )
        manifest.save(out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _add_comparison_rows(manifest, meta.n_parameters)
    log.info("exported %s to %s (parity %s)", meta.name, out_dir, parity)
    return manifest
