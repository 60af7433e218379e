"""Per-feature z-score statistics, computed on the training split and saved with every model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.errors import DataError

# A channel whose training std is below this (e.g. a stuck sensor) is only centred, not scaled,
# so normalization never divides by ~0.
STD_FLOOR = 1e-6


@dataclass
class Normalization:
    """z-score statistics: `apply` maps raw readings [..., F] to (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise DataError(
                f"normalization has {self.mean.size} means but {self.std.size} stds; "
                "re-create it from the training data"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(self.std > 0)):
            raise DataError("normalization needs finite means and positive stds")

    @classmethod
    def fit(cls, readings: np.ndarray) -> Normalization:
        """Statistics of raw readings [N, F] (population std, floored at STD_FLOOR)."""
        values = np.asarray(readings, dtype=np.float64)
        std = values.std(axis=0)
        return cls(mean=values.mean(axis=0), std=np.where(std < STD_FLOOR, 1.0, std))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalized float32 copy of raw readings whose last axis is the features."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.mean.size:
            raise DataError(
                f"readings have {x.shape[-1]} features, the normalization {self.mean.size}"
            )
        return (x - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Normalization:
        try:
            return cls(mean=np.asarray(raw["mean"]), std=np.asarray(raw["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"normalization must have 'mean' and 'std' lists ({exc})") from None
