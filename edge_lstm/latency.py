"""Latency measurement shared by the comparison table, export, quantize and the benchmarks.

One recipe everywhere: warm up, time each call with `perf_counter`, report median/min/max in
milliseconds. Torch runs on one intra-op thread while measured: on a busy 2-core box extra
threads make latency erratic (see docs/ARCHITECTURE.md, "Facts measured").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError


def measure_latency(
    fn: Callable[[np.ndarray], Any],
    x: np.ndarray,
    repeats: int = 50,
    warmup: int = 5,
    min_seconds: float = 0.0,
) -> dict[str, float | int]:
    """Times `fn(x)`; returns median/min/max ms per call, the call count and the batch size.

    `min_seconds` keeps repeating (past `repeats`) until that much time was spent measuring,
    which steadies the median of very fast calls.
    """
    if repeats < 1 or warmup < 0:
        raise EdgeLstmError(f"need repeats >= 1 and warmup >= 0, got {repeats}/{warmup}")
    for _ in range(warmup):
        fn(x)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": len(times),
        "batch": int(x.shape[0]),
    }


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Sets torch's intra-op thread count for the block and restores it afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_window_latency(
    model: Any,
    n_features: int,
    window: int,
    batch: int,
    threads: int = 1,
    repeats: int | None = None,
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, float | int]:
    """Per-call latency of `model(x[batch, window, n_features])` on CPU, eval mode, no grad.

    The dict also carries `per_window_ms` (median / batch) so batch sizes compare directly.
    """
    import torch

    if repeats is None:
        repeats = 100 if batch <= 8 else 10
    x = np.random.default_rng(seed).standard_normal((batch, window, n_features), np.float32)
    tensor = torch.from_numpy(x)
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads), torch.inference_mode():
            result = measure_latency(lambda _: model(tensor), x, repeats=repeats, warmup=warmup)
    finally:
        model.train(was_training)
    result["per_window_ms"] = result["median_ms"] / batch
    result["threads"] = threads
    return result
