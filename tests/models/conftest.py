"""Small synthetic window sets for model and trainer tests (no simulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.data import WindowSet

N_FEATURES = 6
N_CLASSES = 4
WINDOW = 12


def synthetic_windows(n: int, seed: int, permute_labels: bool = False) -> WindowSet:
    """Class k shifts channel 0 by k/2 and oscillates channel 1 at frequency k; learnable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    t = np.arange(WINDOW)
    x = rng.normal(scale=0.5, size=(n, WINDOW, N_FEATURES))
    x[:, :, 0] += y[:, None] * 0.5
    x[:, :, 1] += np.sin(np.outer(y + 1, t) * 0.5)
    if permute_labels:
        y = rng.permutation(y)
    return WindowSet(
        x=x.astype(np.float32),
        y=y.astype(np.int64),
        run_ids=np.array([f"run{i % 10}" for i in range(n)]),
        end_ts=np.arange(n, dtype=np.float64),
        onset=np.zeros(n, dtype=bool),
    )


@pytest.fixture(scope="session")
def train_windows() -> WindowSet:
    return synthetic_windows(256, seed=0)


@pytest.fixture(scope="session")
def val_windows() -> WindowSet:
    return synthetic_windows(96, seed=1)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and 2 threads on a busy 2-core box can crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
