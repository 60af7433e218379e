"""Classification metrics from predicted probabilities and labels, for any model type.

Everything is computed from `probs[N, C]` and `labels[N]` (scikit-learn's metrics, numpy
around them), so a checkpoint, an ONNX graph and a TensorRT engine are scored by exactly the
same code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError
from edge_lstm.plotting import pyplot, save_figure

log = logging.getLogger(__name__)


def _check_inputs(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
    if probs.ndim != 2:
        raise EdgeLstmError(f"probabilities must be [N, C], got shape {probs.shape}")
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise EdgeLstmError(
            f"labels must be [N] with N = {probs.shape[0]} (rows of probs), got {labels.shape}"
        )
    if probs.shape[1] != len(class_names):
        raise EdgeLstmError(
            f"the model outputs {probs.shape[1]} classes but {len(class_names)} class names "
            "were given: the artifact and the data disagree on the classes"
        )
    if probs.shape[0] == 0:
        raise EdgeLstmError("no windows to evaluate (the split is empty)")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise EdgeLstmError(f"labels must lie in [0, {len(class_names) - 1}]")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax(logits / temperature) in float64 for stability, returned as float32."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


HEADLINE_KEYS = ("accuracy", "macro_f1", "weighted_f1", "cohen_kappa", "roc_auc_macro")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of a compute_metrics result (what goes into a checkpoint's meta)."""
    return {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (a confusion-matrix row without windows)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _cohen_kappa(labels: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's kappa, and 1.0 where it is undefined: a single class in labels and
    predictions alike (perfect agreement, but chance agreement is 1 too)."""
    from sklearn.metrics import cohen_kappa_score

    if np.unique(np.concatenate([labels, pred])).size == 1:
        return 1.0
    return float(cohen_kappa_score(labels, pred))


def _roc_auc_per_class(
    probs: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> tuple[dict[str, float], list[str]]:
    """One-vs-rest ROC-AUC per class; a class with no positive or no negative window has
    none (scikit-learn would raise) and is returned in the skipped list instead."""
    from sklearn.metrics import roc_auc_score

    auc: dict[str, float] = {}
    skipped: list[str] = []
    for k, name in enumerate(class_names):
        positive = labels == k
        if positive.all() or not positive.any():
            skipped.append(name)
            continue
        auc[name] = float(roc_auc_score(positive, probs[:, k]))
    if skipped:
        log.info("ROC-AUC skips classes without both positives and negatives: %s", skipped)
    return auc, skipped


def compute_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1, Cohen's kappa, OvR macro ROC-AUC, confusion.

    Computed with scikit-learn (imported here, so the rest of this module stays numpy-only).
    Macro F1 averages over the classes that occur in the labels or the predictions
    (scikit-learn without an explicit `labels=`), so a split that lacks a class is not
    penalised for it; a class never predicted scores precision 0 (`zero_division=0`). ROC-AUC
    skips classes with no positive (or no negative) window and lists them under
    `roc_auc_skipped`.
    """
    from sklearn import metrics as skm

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    _check_inputs(probs, labels, class_names)
    every_class = list(range(len(class_names)))
    pred = probs.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, pred, labels=every_class, zero_division=0
    )
    auc_per_class, skipped = _roc_auc_per_class(probs, labels, class_names)
    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "roc_auc": auc_per_class.get(name),
        }
        for k, name in enumerate(class_names)
    }
    confusion = skm.confusion_matrix(labels, pred, labels=every_class)
    return {
        "n": len(labels),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "macro_f1": float(skm.f1_score(labels, pred, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(labels, pred, average="weighted", zero_division=0)),
        "cohen_kappa": _cohen_kappa(labels, pred),
        "roc_auc_macro": float(np.mean(list(auc_per_class.values()))) if auc_per_class else None,
        "roc_auc_skipped": skipped,
        "classes": list(class_names),
        "per_class": per_class,
        "confusion_matrix": confusion.astype(np.int64).tolist(),
    }


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A readable text summary: headline figures, then one line per class."""
    auc = metrics["roc_auc_macro"]
    lines = [
        f"windows {metrics['n']}  accuracy {metrics['accuracy']:.4f}  "
        f"macro-F1 {metrics['macro_f1']:.4f}  weighted-F1 {metrics['weighted_f1']:.4f}  "
        f"kappa {metrics['cohen_kappa']:.4f}  ROC-AUC {'n/a' if auc is None else f'{auc:.4f}'}",
    ]
    if metrics["roc_auc_skipped"]:
        lines.append(f"ROC-AUC skipped (class absent): {', '.join(metrics['roc_auc_skipped'])}")
    width = max(len(c) for c in metrics["classes"])
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for name, row in metrics["per_class"].items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
            f"{row['f1']:5.3f}  {row['support']:7d}"
        )
    return lines


def plot_confusion(
    metrics_or_cm: dict[str, Any] | np.ndarray | list[list[int]],
    class_names: list[str],
    path: Path,
    title: str = "Confusion matrix",
) -> Path:
    """PNG of the row-normalised confusion matrix (colour = recall share) annotated with counts."""
    plt = pyplot()
    raw = metrics_or_cm["confusion_matrix"] if isinstance(metrics_or_cm, dict) else metrics_or_cm
    cm = np.asarray(raw, dtype=np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise EdgeLstmError(
            f"confusion matrix shape {cm.shape} does not match {len(class_names)} class names"
        )
    norm = _safe_div(cm.astype(np.float64), cm.sum(axis=1, keepdims=True).astype(np.float64))
    n = len(class_names)
    size = max(5.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", color=colour, fontsize=8)
    return save_figure(fig, path)
