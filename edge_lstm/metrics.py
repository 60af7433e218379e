"""Classification metrics from predicted probabilities and labels, for any model type.

Everything is computed from `probs[N, C]` and `labels[N]` with numpy, so a checkpoint, an ONNX
graph and a TensorRT engine are scored by exactly the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError

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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stability, returned as float32 probabilities."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


HEADLINE_KEYS = ("accuracy", "macro_f1", "weighted_f1", "cohen_kappa", "roc_auc_macro")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of a compute_metrics result (what goes into a checkpoint's meta)."""
    return {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC as the Mann–Whitney U statistic, ties counted half (same as the ROC area)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _cohen_kappa(cm: np.ndarray) -> float:
    total = cm.sum()
    observed = np.trace(cm) / total
    expected = float((cm.sum(axis=0) * cm.sum(axis=1)).sum()) / (total * total)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return float((observed - expected) / (1.0 - expected))


def compute_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1, Cohen's kappa, OvR macro ROC-AUC, confusion.

    Macro F1 averages over the classes that occur in the labels or the predictions (what
    scikit-learn does without an explicit `labels=`), so a split that lacks a class is not
    penalised for it. ROC-AUC skips classes with no positive (or no negative) window and lists
    them under `roc_auc_skipped`.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    _check_inputs(probs, labels, class_names)
    n_classes = len(class_names)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(pred, labels, n_classes)

    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    seen = (support > 0) | (predicted > 0)

    auc_per_class: dict[str, float] = {}
    skipped: list[str] = []
    for k, name in enumerate(class_names):
        positive = labels == k
        if positive.all() or not positive.any():
            skipped.append(name)
            continue
        auc_per_class[name] = _binary_auc(probs[:, k], positive)
    if skipped:
        log.info("ROC-AUC skips classes without both positives and negatives: %s", skipped)

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
    return {
        "n": len(labels),
        "accuracy": float(tp.sum() / len(labels)),
        "macro_f1": float(f1[seen].mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "cohen_kappa": _cohen_kappa(cm),
        "roc_auc_macro": float(np.mean(list(auc_per_class.values()))) if auc_per_class else None,
        "roc_auc_skipped": skipped,
        "classes": list(class_names),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
