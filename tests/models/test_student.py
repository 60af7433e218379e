"""The student's explicit-gate `step` must reproduce the fused nn.GRU/nn.LSTM `forward`."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_lstm.config import StudentConfig
from edge_lstm.models import Student, count_parameters

F, C, W = 24, 9, 60


def _run_steps(model: Student, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    state = model.initial_state(x.shape[0])
    logits = None
    for t in range(x.shape[1]):
        logits, state = model.step(x[:, t], state)
    return logits, state


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("head_hidden", [0, 16])
def test_step_matches_forward(cell: str, layers: int, head_hidden: int) -> None:
    torch.manual_seed(layers * 10 + head_hidden)
    cfg = StudentConfig(cell=cell, layers=layers, hidden_size=32, head_hidden=head_hidden)
    model = Student(F, C, cfg).eval()
    x = torch.randn(7, W, F) * 2
    with torch.no_grad():
        full = model(x)
        stepped, state = _run_steps(model, x)
        _, rnn_state = model.rnn(x)
    assert stepped.shape == (7, C)
    assert (stepped - full).abs().max().item() <= 1e-5
    expected = rnn_state if isinstance(rnn_state, tuple) else (rnn_state,)
    assert len(state) == len(expected) == len(model.state_names)
    for ours, theirs in zip(state, expected, strict=True):
        assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_initial_state_and_properties(cell: str) -> None:
    model = Student(F, C, StudentConfig(cell=cell, layers=2, hidden_size=16))
    state = model.initial_state(5)
    assert len(state) == (1 if cell == "gru" else 2)
    assert all(s.shape == (2, 5, 16) and not s.any() for s in state)
    assert (model.cell, model.layers, model.hidden_size) == (cell, 2, 16)
    assert (model.n_features, model.n_classes) == (F, C)


def test_step_continues_from_a_midway_state() -> None:
    """Streaming splits a window at any reading: resuming from a saved state changes nothing."""
    torch.manual_seed(0)
    model = Student(F, C, StudentConfig(cell="lstm", layers=2, hidden_size=16)).eval()
    x = torch.randn(3, W, F)
    with torch.no_grad():
        _, half = _run_steps(model, x[:, :25])
        state = tuple(s.clone() for s in half)
        for t in range(25, W):
            logits, state = model.step(x[:, t], state)
        assert torch.allclose(logits, model(x), atol=1e-5)


def test_students_are_small() -> None:
    gru = Student(F, C, StudentConfig(cell="gru", hidden_size=32))
    lstm = Student(F, C, StudentConfig(cell="lstm", hidden_size=32))
    assert count_parameters(gru) == 3 * 32 * (F + 32) + 6 * 32 + 32 * C + C
    assert count_parameters(lstm) == 4 * 32 * (F + 32) + 8 * 32 + 32 * C + C


class _StepGraph(torch.nn.Module):
    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, (h_out, c_out) = self.student.step(x, (h, c))
        return logits, h_out, c_out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_traced_step_is_plain_ops_and_matches_ort(tmp_path) -> None:
    """The TorchScript export of `step` has no LSTM/GRU/Loop node and agrees with torch."""
    torch.manual_seed(0)
    model = Student(F, C, StudentConfig(cell="lstm", layers=2, hidden_size=16)).eval()
    h, c = model.initial_state(1)
    path = tmp_path / "step.onnx"
    torch.onnx.export(
        _StepGraph(model),
        (torch.zeros(1, F), h, c),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x", "h", "c"],
        output_names=["logits", "h_out", "c_out"],
        dynamic_axes={"x": {0: "B"}, "h": {1: "B"}, "c": {1: "B"}},
    )
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert not {"LSTM", "GRU", "RNN", "Loop", "Scan", "If"} & set(ops)
    assert ops["Sigmoid"] and ops["Tanh"] and ops["MatMul"]

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(4, W, F)).astype(np.float32)
    state = {"h": np.zeros((2, 4, 16), np.float32), "c": np.zeros((2, 4, 16), np.float32)}
    for t in range(W):
        logits, state["h"], state["c"] = sess.run(None, {"x": x[:, t], **state})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(logits - expected).max() <= 1e-4
