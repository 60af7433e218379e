"""Cuts runs of normalized readings into fixed-length windows labelled by their last reading."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass
class WindowSet:
    """Windows of one split.

    x: float32 [N, W, F], already normalized with the training statistics; y: int64 [N] class
    index of each window's last reading; run_ids: [N] run of each window; end_ts: [N] timestamp
    of each window's last reading; onset: bool [N], True when the window's readings carry more
    than one label (it straddles a label change, e.g. a fault onset), so its label `y` describes
    only its end.
    """

    x: np.ndarray
    y: np.ndarray
    run_ids: np.ndarray
    end_ts: np.ndarray
    onset: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def window_starts(n_readings: int, window: int, stride: int) -> np.ndarray:
    """First-reading index of every full window of a run: 0, stride, 2·stride, ..."""
    if n_readings < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_readings - window + 1, stride, dtype=np.int64)


def make_windows(
    values: np.ndarray,
    labels: np.ndarray,
    ts: np.ndarray,
    run_id: str,
    window: int,
    stride: int,
) -> WindowSet:
    """Windows of one run: values [T, F] (normalized), labels int [T], ts [T]."""
    starts = window_starts(len(values), window, stride)
    ends = starts + window - 1
    view = sliding_window_view(values, window, axis=0)[starts]  # [N, F, W]
    labels = np.asarray(labels, dtype=np.int64)
    # changes[i]: label changes among readings 0..i, so a window [s, e] holds
    # changes[e] - changes[s] of them
    changes = np.r_[0, np.cumsum(labels[1:] != labels[:-1])]
    return WindowSet(
        x=np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32),
        y=labels[ends],
        run_ids=np.full(len(starts), run_id, dtype=object),
        end_ts=np.asarray(ts, dtype=np.float64)[ends],
        onset=changes[ends] > changes[starts],
    )


def concat_windows(parts: list[WindowSet], window: int, n_features: int) -> WindowSet:
    """One WindowSet from several runs' windows (an empty, well-shaped set for no parts)."""
    if not parts:
        return WindowSet(
            x=np.zeros((0, window, n_features), dtype=np.float32),
            y=np.zeros(0, dtype=np.int64),
            run_ids=np.zeros(0, dtype=object),
            end_ts=np.zeros(0, dtype=np.float64),
            onset=np.zeros(0, dtype=bool),
        )
    return WindowSet(
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        run_ids=np.concatenate([p.run_ids for p in parts]),
        end_ts=np.concatenate([p.end_ts for p in parts]),
        onset=np.concatenate([p.onset for p in parts]),
    )
