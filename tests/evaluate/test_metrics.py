"""compute_metrics agrees with scikit-learn; plot_confusion writes a PNG."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import compute_metrics, plot_confusion

CLASSES = ["normal", "bearing", "imbalance", "never_seen"]


def _known_case() -> tuple[np.ndarray, np.ndarray]:
    """Noisy probabilities for 3 of 4 classes (class 3 never appears in the labels), with ties."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    logits = rng.normal(size=(300, 4))
    logits[np.arange(300), labels] += 1.2
    logits[:20] = 0.0  # exact ties in the scores
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def test_metrics_match_sklearn() -> None:
    probs, labels = _known_case()
    pred = probs.argmax(axis=1)
    m = compute_metrics(probs, labels, CLASSES)

    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(labels, pred, average="macro", zero_division=0)
    )
    assert m["weighted_f1"] == pytest.approx(
        skm.f1_score(labels, pred, average="weighted", zero_division=0)
    )
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(labels, pred))
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=range(4), zero_division=0)
    for k, name in enumerate(CLASSES):
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(p[k])
        assert row["recall"] == pytest.approx(r[k])
        assert row["f1"] == pytest.approx(f[k])
        assert row["support"] == s[k]
    aucs = [skm.roc_auc_score(labels == k, probs[:, k]) for k in range(3)]
    assert m["roc_auc_macro"] == pytest.approx(np.mean(aucs))
    assert m["roc_auc_skipped"] == ["never_seen"]
    assert m["per_class"]["never_seen"]["roc_auc"] is None
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, pred, labels=range(4)).tolist()


def test_perfect_predictions() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[labels]
    m = compute_metrics(probs, labels, CLASSES[:3])
    assert m["accuracy"] == m["macro_f1"] == m["cohen_kappa"] == m["roc_auc_macro"] == 1.0


def test_class_count_mismatch_is_a_clear_error() -> None:
    probs, labels = _known_case()
    with pytest.raises(EdgeLstmError, match="4 classes but 3 class names"):
        compute_metrics(probs, labels, CLASSES[:3])


def test_plot_confusion_writes_png(tmp_path) -> None:
    probs, labels = _known_case()
    m = compute_metrics(probs, labels, CLASSES)
    path = plot_confusion(m, CLASSES, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
