"""The drift reference written at export: what the model's inputs and outputs looked like.

The gateway (runtime/drift.py) compares each device's live readings with these figures and the
fleet's confidence and class mix with the validation split's, so an operator learns when the
inputs no longer look like the training data.

Inputs, in normalized units (z = (raw - norm_mean) / norm_std, as the runtime normalizes): every
reading of the training split, once (the windows overlap, the readings do not). Per feature,
the bin edges are the training quantiles at `FEATURE_QUANTILES` (0.1 %, 10 %, ..., 90 %, 99.9 %),
so the ten inner bins hold ~10 % each and the two open-ended outer bins ~0.1 % each: values
beyond what training saw land in a bin whose reference share is tiny, which is what makes a
shift visible. Outputs: the exported window graph's probabilities on the validation windows at
the manifest's temperature (so `calibrate` must have run): the top probability binned at its
deciles and the share of windows whose top class is each class.

The monitor decides on a mean shift: per feature, the mean and spread over the training runs'
blocks of `BLOCK_WINDOWS` windows' readings of each block's mean. A device's recent mean that
lies several of those spreads from the blocks' mean has moved further than training runs do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.parity import ort_session, window_logits
from runtime.manifest import DriftReference, Manifest, bin_index

FEATURE_QUANTILES = (0.001, *(i / 10 for i in range(1, 10)), 0.999)
CONFIDENCE_QUANTILES = tuple(i / 10 for i in range(1, 10))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each of the E + 1 bins of `edges` (per feature for [N, F] / [F, E])."""
    bins = bin_index(values, edges)
    n_bins = edges.shape[-1] + 1
    if bins.ndim == 1:
        return np.bincount(bins, minlength=n_bins) / max(bins.size, 1)
    offsets = np.arange(bins.shape[1]) * n_bins
    counts = np.bincount((bins + offsets).ravel(), minlength=bins.shape[1] * n_bins)
    return counts.reshape(bins.shape[1], n_bins) / max(bins.shape[0], 1)


BLOCK_WINDOWS = 5  # a block of this many windows' readings: a device's recent mean
MIN_SD = 1e-3  # floor of a block spread (a constant feature), in normalized units


def training_readings(data: Any, run_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Every training-split reading once, normalized with the training statistics, [N, F], and
    the run of each reading [N]."""
    frame = data.readings
    rows = frame[run_column].isin(data.split_runs["train"]).to_numpy()
    values = frame.loc[rows, list(data.features)].to_numpy(dtype=np.float32)
    runs = frame.loc[rows, run_column].astype(str).to_numpy()
    return np.asarray(data.normalization.apply(values), dtype=np.float64), runs


def block_means(train: np.ndarray, runs: np.ndarray, block: int) -> np.ndarray:
    """Means [B, F] of consecutive, non-overlapping blocks of `block` readings of each run (a
    run shorter than a block is one block), so their spread says how far one device's recent
    mean strays within training."""
    out = []
    for run in dict.fromkeys(runs.tolist()):
        values = train[runs == run]
        n = max(1, len(values) // block)
        out += [chunk.mean(axis=0) for chunk in np.array_split(values[: n * block], n)]
    return np.asarray(out)


def drift_reference(
    train: np.ndarray,
    runs: np.ndarray,
    val_probs: np.ndarray | None,
    n_classes: int,
    block: int,
) -> DriftReference:
    """The reference of normalized training readings [N, F] of the runs `runs` [N] and
    validation probabilities [M, C] (None or empty: no confidence and class figures). With a
    single block in all, the block spread falls back to the readings' standard deviation."""
    edges = np.quantile(train, FEATURE_QUANTILES, axis=0).T  # [F, E]
    means = block_means(train, runs, block)
    spread = means.std(axis=0, ddof=1) if len(means) > 1 else train.std(axis=0)
    reference = DriftReference(
        edges=edges.tolist(),
        share=shares(train, edges).tolist(),
        mean=train.mean(axis=0).tolist(),
        var=train.var(axis=0).tolist(),
        readings=int(train.shape[0]),
        block_mean=means.mean(axis=0).tolist(),
        block_sd=np.maximum(spread, MIN_SD).tolist(),
        block=block,
    )
    if val_probs is None or len(val_probs) == 0:
        return reference
    top = val_probs.max(axis=1)
    confidence_edges = np.quantile(top, CONFIDENCE_QUANTILES)
    reference.confidence_edges = confidence_edges.tolist()
    reference.confidence_share = shares(top, confidence_edges).tolist()
    counts = np.bincount(val_probs.argmax(axis=1), minlength=n_classes)
    reference.class_share = (counts / counts.sum()).tolist()
    reference.windows = len(val_probs)
    return reference


def reference_for_export(
    window_file: Path, manifest: Manifest, data: Any, run_column: str
) -> DriftReference:
    """The reference of a folder being exported: the training readings, and the window graph
    `window_file` on the validation windows at `manifest.temperature`."""
    val_probs = None
    if len(data.val.x):
        val_probs = manifest.probabilities(window_logits(ort_session(window_file), data.val.x))
    train, runs = training_readings(data, run_column)
    block = BLOCK_WINDOWS * manifest.window
    return drift_reference(train, runs, val_probs, manifest.n_classes, block)
