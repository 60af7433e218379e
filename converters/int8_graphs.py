"""Writing int8 ONNX graphs with ONNX Runtime's quantizer: dynamic, static QDQ, and static QDQ
in the form TensorRT's explicit quantization parses (see converters/quantize.py for which
artifact each is and how they are checked), and the facts checked on what they wrote: weight
scale layout, recurrent ops left fp32, batch invariance, TensorRT's Q/DQ form.

Weights are quantized per channel (one scale per output column) in every mode: ONNX Runtime
supports it for every op we quantize (MatMulInteger and DynamicQuantizeLSTM in dynamic mode,
QDQ MatMul/Gemm in static mode; measured on the test students: argmax agreement and logits
error as good as per-tensor or better), and one large weight then coarsens only its own
column instead of the whole matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.onnx_files import LOOP_OPS, op_counts
from converters.parity import (
    StepGraph,
    ort_session,
    step_graph_logits,
)
from edge_lstm.config import Config
from runtime.manifest import (
    LOGITS,
    STATE_OUTPUT_SUFFIX,
    STEP_INPUT,
    WINDOW_INPUT,
    Manifest,
)

log = logging.getLogger(__name__)

QUANTIZED_OPS = (
    "MatMulInteger",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
)
STATIC_OP_TYPES = ["MatMul", "Gemm"]
CALIBRATION_BATCH = 64
# largest probability change a window may show alone vs batched and still count as invariant
# (float32 rounding; constant-scale graphs measured exactly 0)
BATCH_INVARIANCE_TOLERANCE = 1e-6
# ops that only move or index a tensor: a state input seen through them is still the state
DATA_MOVEMENT_OPS = frozenset(
    {"Gather", "Slice", "Split", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Transpose",
     "Flatten"}
)  # fmt: skip
# what TensorRT's explicit quantization parses (module docstring); `per_channel=True` as well
TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "DedicatedQDQPair": True,
    "AddQDQPairToWeight": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": STATIC_OP_TYPES,
}


def calibration_feeds(
    fp32_path: Path, kind: str, manifest: Manifest, x: np.ndarray
) -> list[dict[str, np.ndarray]]:
    """Inputs the calibrator runs: whole windows for a window graph; for a step graph every
    step's reading with the real recurrent state the fp32 graph carried into that step."""
    if kind == "window":
        return [
            {WINDOW_INPUT: x[i : i + CALIBRATION_BATCH]}
            for i in range(0, len(x), CALIBRATION_BATCH)
        ]
    feeds: list[dict[str, np.ndarray]] = []
    step_graph_logits(
        StepGraph(ort_session(fp32_path), manifest),
        x,
        batch=CALIBRATION_BATCH,
        on_step=lambda x_t, state: feeds.append({STEP_INPUT: x_t, **state}),
    )
    return feeds


def pick_calibration_windows(cfg: Config, train_x: np.ndarray, n: int) -> np.ndarray:
    """`n` training windows drawn without replacement (seeded by data.seed)."""
    rng = np.random.default_rng(cfg.data.seed)
    pick = rng.choice(len(train_x), size=min(n, len(train_x)), replace=False)
    return train_x[np.sort(pick)]


class SkipPreprocessAdvice(logging.Filter):
    """Drops ONNX Runtime's "consider pre-processing" notice, printed on every call (our graphs
    come from the exporter with constants folded, and each result is scored), and its
    "quantization parameters ... not specified" lines, one per activation in dynamic mode,
    which picks those parameters per call by design."""

    NOTICES = ("pre-processing before quantization", "Quantization parameters for tensor")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


@contextmanager
def quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    advice = SkipPreprocessAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def dynamic_file(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantizer():
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)


def fp32_recurrent_ops(path: Path) -> list[str]:
    """The fused recurrent ops (LSTM, GRU, ...) a quantized graph still runs in fp32: a window
    graph with one gains nothing from int8 (its weights and time are the recurrent op's)."""
    return sorted(set(op_counts(path)) & LOOP_OPS)


def weight_scales(path: Path) -> dict[str, Any]:
    """How the int8 weights of `path` are scaled: how many per channel (a vector of scales),
    and the names of those per tensor (one scale), which only an op without per-channel
    support would leave.

    Reads ONNX Runtime's naming (`W_quantized` with `W_scale`); a graph whose weights stay
    float with Q/DQ pairs (the TensorRT form) has none of those, `check_tensorrt_qdq` covers it.
    """
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    per_tensor: list[str] = []
    per_channel = 0
    for name, init in inits.items():
        scale = inits.get(name.removesuffix("_quantized") + "_scale")
        if not name.endswith("_quantized") or init.data_type != onnx.TensorProto.INT8 or not scale:
            continue
        if numpy_helper.to_array(scale).size > 1:
            per_channel += 1
        else:
            per_tensor.append(name.removesuffix("_quantized"))
    return {"per_channel": per_channel, "per_tensor": per_tensor}


def batch_invariance(path: Path, manifest: Manifest, x: np.ndarray) -> dict[str, Any]:
    """Whether a window's probabilities from the step graph `path` depend on the other windows
    in its step calls, as they do on a gateway that batches many devices' readings.

    Each window of x[N, W, F] runs alone (batch 1, W steps) and once in one batch with all the
    others; `max_batch_diff` is the largest probability difference. Constant (calibrated)
    scales make each row independent; DynamicQuantizeLinear picks its scale from the whole
    batch of each call, so a dynamic graph's answer moves with its neighbours.
    """
    from edge_lstm.metrics import softmax

    graph = StepGraph(ort_session(path), manifest)
    alone = np.concatenate([step_graph_logits(graph, x[i : i + 1]) for i in range(len(x))])
    together = step_graph_logits(graph, x, batch=len(x))
    diff = float(np.abs(softmax(alone) - softmax(together)).max())
    return {
        "batch_invariant": diff <= BATCH_INVARIANCE_TOLERANCE,
        "max_batch_diff": diff,
        "batch_check_windows": len(x),
    }


def state_path_tensors(model: Any, state_names: tuple[str, ...]) -> set[str]:
    """The incoming state inputs and every tensor made from them by data-movement ops only
    (per-layer Gathers, Slices, ...): what the recurrent MatMuls read."""
    reached = set(state_names)
    for node in model.graph.node:  # exported graphs are topologically sorted
        if node.op_type in DATA_MOVEMENT_OPS and node.input and node.input[0] in reached:
            reached.update(node.output)
    return reached


def recurrent_nodes(model: Any, state_names: tuple[str, ...]) -> list[str]:
    """Names of the MatMul/Gemm nodes that read the incoming recurrent state."""
    state = state_path_tensors(model, state_names)
    return [
        node.name
        for node in model.graph.node
        if node.op_type in STATIC_OP_TYPES and state & set(node.input)
    ]


def named_copy(src: Path, folder: Path) -> tuple[Path, Any]:
    """`src` with every node named (nodes_to_exclude selects by name), written into `folder`."""
    import onnx

    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    path = folder / f"{src.stem}.named.onnx"
    onnx.save(model, str(path))
    return path, model


def static_file(
    src: Path,
    dst: Path,
    feeds: list[dict[str, np.ndarray]],
    tensorrt: bool = False,
    state_names: tuple[str, ...] = (),
) -> list[str]:
    """Writes the static QDQ graph of `src` to `dst`; returns the nodes left unquantized
    (for TensorRT: the recurrent MatMuls)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    excluded: list[str] = []
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "DedicatedQDQPair": True,
    }
    source = src
    if tensorrt:
        source, model = named_copy(src, dst.parent)
        excluded = recurrent_nodes(model, state_names)
        extra = dict(TENSORRT_QDQ_OPTIONS)
    try:
        with quiet_quantizer():
            quantize_static(
                source,
                dst,
                FeedReader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=STATIC_OP_TYPES,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=excluded,
                # symmetric int8 everywhere: what TensorRT's explicit quantization accepts
                extra_options=extra,
            )
    finally:
        if source != src:
            source.unlink(missing_ok=True)
    return excluded


def check_tensorrt_qdq(path: Path, state_names: tuple[str, ...]) -> dict[str, Any]:
    """Checks that `path` is in TensorRT's Q/DQ form (module docstring) and returns what it
    holds; ConverterError naming the first node that is not."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    state = state_path_tensors(model, state_names)
    per_channel = 0
    problems = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero_point is not None and np.any(numpy_helper.to_array(zero_point) != 0):
            problems.append(f"{node.name} has a non-zero zero point")
        if node.op_type == "QuantizeLinear":
            if node.input[0] in state:
                problems.append(f"{node.name} quantizes the recurrent state ({node.input[0]})")
            scale = inits.get(node.input[1])
            per_channel += scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
        elif getattr(producers.get(node.input[0]), "op_type", None) != "QuantizeLinear":
            problems.append(
                f"{node.name} dequantizes {node.input[0]}, which no QuantizeLinear produced "
                "(an int8/int32 initializer: TensorRT wants float weights with a Q/DQ pair)"
            )
    for out in (LOGITS, *(n + STATE_OUTPUT_SUFFIX for n in state_names)):
        if getattr(producers.get(out), "op_type", None) == "DequantizeLinear":
            problems.append(f"the graph output {out} is quantized")
    if problems:
        raise ConverterError(f"{path.name} is not in TensorRT's Q/DQ form: {problems[0]}")
    ops = op_counts(path)
    return {
        "qdq_pairs": ops.get("QuantizeLinear", 0),
        "per_channel_weights": int(per_channel),
        "float_bias": True,
    }
