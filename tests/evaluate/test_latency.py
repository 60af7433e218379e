"""Latency helpers: the figures they report and the torch settings they restore."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from edge_lstm.config import StudentConfig
from edge_lstm.errors import EdgeLstmError
from edge_lstm.latency import measure_latency, torch_window_latency
from edge_lstm.models import Student


def test_measure_latency_times_each_call() -> None:
    calls: list[int] = []

    def slow(x: np.ndarray) -> None:
        calls.append(len(x))
        time.sleep(0.002)

    result = measure_latency(slow, np.zeros((7, 3)), repeats=5, warmup=2)
    assert len(calls) == 7 and result["repeats"] == 5 and result["batch"] == 7
    assert 2.0 <= result["min_ms"] <= result["median_ms"] <= result["max_ms"] < 200


def test_measure_latency_refuses_zero_repeats() -> None:
    with pytest.raises(EdgeLstmError, match="repeats"):
        measure_latency(lambda x: x, np.zeros(1), repeats=0)


def test_torch_window_latency_restores_threads_and_mode() -> None:
    model = Student(6, 3, StudentConfig(hidden_size=8))
    model.train()
    before = torch.get_num_threads()
    result = torch_window_latency(model, n_features=6, window=10, batch=4, repeats=3)
    assert torch.get_num_threads() == before and model.training
    assert result["threads"] == 1 and result["batch"] == 4
    assert result["per_window_ms"] == pytest.approx(result["median_ms"] / 4)
