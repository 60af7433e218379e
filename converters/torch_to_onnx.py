"""PyTorch -> ONNX for both graphs: the window graph and the student's loop-free step graph.

RNN graphs use the TorchScript exporter (`dynamo=False`): the torch.export-based exporter has
emitted GRU with a wrong `linear_before_reset` (pytorch/pytorch#189225) and adds gate-reordering
nodes that stop ONNX Runtime from quantizing the LSTM.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.onnx_files import LOOP_OPS, op_counts
from runtime.manifest import LOGITS, STATE_OUTPUT_SUFFIX, STEP_INPUT, WINDOW_INPUT

log = logging.getLogger(__name__)


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


def simplify(path: Path) -> None:
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


def export_window_graph(model: Any, path: Path, x: np.ndarray, opset: int) -> None:
    """x[B, W, F] -> logits[B, C], batch dynamic, traced on the windows `x`."""
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
    simplify(path)


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


def export_step_graph(student: Any, path: Path, n_features: int, opset: int) -> None:
    """x[B, F] + state [L, B, H] -> logits, state_out; refuses a graph with loops or RNN ops."""
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
    simplify(path)
