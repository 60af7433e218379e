"""compute_metrics on cases worked out by hand, the edge cases it promises to handle (a class
never predicted, a class absent from the split, a single-class split), its errors, and the
helpers around it (softmax, headline, summary_lines, plot_confusion)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import (
    HEADLINE_KEYS,
    compute_metrics,
    headline,
    plot_confusion,
    softmax,
    summary_lines,
)

CLASSES = ["normal", "bearing", "imbalance", "never_seen"]

# Six windows: "imbalance" occurs once and is never predicted, "never_seen" occurs nowhere.
HAND_PROBS = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],  # normal    -> normal
        [0.6, 0.2, 0.1, 0.1],  # normal    -> normal
        [0.3, 0.5, 0.1, 0.1],  # normal    -> bearing
        [0.2, 0.6, 0.1, 0.1],  # bearing   -> bearing
        [0.1, 0.7, 0.1, 0.1],  # bearing   -> bearing
        [0.5, 0.1, 0.3, 0.1],  # imbalance -> normal
    ]
)
HAND_LABELS = np.array([0, 0, 0, 1, 1, 2])


def test_a_case_worked_out_by_hand() -> None:
    m = compute_metrics(HAND_PROBS, HAND_LABELS, CLASSES)
    # rows are the true class, columns the predicted one
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    pc = m["per_class"]
    assert (pc["normal"]["precision"], pc["normal"]["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert (pc["bearing"]["precision"], pc["bearing"]["recall"]) == pytest.approx((2 / 3, 1.0))
    assert pc["bearing"]["f1"] == pytest.approx(0.8)
    assert [pc[c]["support"] for c in CLASSES] == [3, 2, 1, 0]
    # kappa: observed 4/6, chance (3·3 + 2·3 + 1·0) / 36 = 5/12
    assert m["cohen_kappa"] == pytest.approx((4 / 6 - 5 / 12) / (1 - 5 / 12))
    # weighted by support: (3 · 2/3 + 2 · 0.8 + 1 · 0) / 6
    assert m["weighted_f1"] == pytest.approx(0.6)
    # one-vs-rest: normal ranks 8 of its 9 (positive, negative) pairs right, the others all
    assert pc["normal"]["roc_auc"] == pytest.approx(8 / 9)
    assert pc["bearing"]["roc_auc"] == pytest.approx(1.0)
    assert m["roc_auc_macro"] == pytest.approx((8 / 9 + 1 + 1) / 3)


def test_a_class_never_predicted_scores_zero_and_counts_in_macro_f1() -> None:
    m = compute_metrics(HAND_PROBS, HAND_LABELS, CLASSES)
    never_predicted = m["per_class"]["imbalance"]
    assert never_predicted["precision"] == never_predicted["recall"] == 0.0
    assert never_predicted["f1"] == 0.0
    # ...but its one window is still ranked above every other by its own score
    assert never_predicted["roc_auc"] == pytest.approx(1.0)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)


def test_a_class_absent_from_the_split_is_not_averaged_in() -> None:
    m = compute_metrics(HAND_PROBS, HAND_LABELS, CLASSES)
    absent = m["per_class"]["never_seen"]
    assert absent["support"] == 0 and absent["roc_auc"] is None
    assert m["roc_auc_skipped"] == ["never_seen"]
    # the same figures as with the class left out altogether
    without = compute_metrics(HAND_PROBS[:, :3], HAND_LABELS, CLASSES[:3])
    for key in HEADLINE_KEYS:
        assert m[key] == pytest.approx(without[key]), key
    assert without["roc_auc_skipped"] == []


def test_a_class_predicted_but_absent_from_the_labels_counts_in_macro_f1() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.1, 0.2, 0.7]])
    m = compute_metrics(probs, np.array([0, 1, 1]), CLASSES[:3])
    assert m["per_class"]["imbalance"]["support"] == 0
    # normal 1, bearing P=1 R=1/2 -> 2/3, imbalance 0 (predicted once, never right)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["weighted_f1"] == pytest.approx((1 * 1 + 2 * 2 / 3) / 3)


def test_single_class_split_has_no_roc_auc() -> None:
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(8, 3)))
    m = compute_metrics(probs, np.zeros(8, dtype=int), CLASSES[:3])
    assert m["roc_auc_macro"] is None
    assert m["roc_auc_skipped"] == CLASSES[:3]
    assert all(row["roc_auc"] is None for row in m["per_class"].values())
    assert "ROC-AUC n/a" in summary_lines(m)[0]
    assert summary_lines(m)[1] == f"ROC-AUC skipped (class absent): {', '.join(CLASSES[:3])}"


def test_kappa_when_chance_agreement_is_total_or_nothing_better() -> None:
    labels = np.zeros(6, dtype=int)
    all_normal = np.tile([0.8, 0.2], (6, 1))
    # one class in labels and predictions alike: perfect agreement (undefined in the formula)
    assert compute_metrics(all_normal, labels, CLASSES[:2])["cohen_kappa"] == 1.0
    # one true class, mixed predictions: agreement is exactly what chance gives
    mixed = np.array([[0.8, 0.2], [0.2, 0.8]] * 3)
    assert compute_metrics(mixed, labels, CLASSES[:2])["cohen_kappa"] == pytest.approx(0.0)
    # always wrong on a balanced split: worse than chance
    flipped = np.eye(2)[1 - np.array([0, 1, 0, 1])]
    assert compute_metrics(flipped, np.array([0, 1, 0, 1]), CLASSES[:2])["cohen_kappa"] == -1.0


def test_tied_scores_count_half_in_roc_auc() -> None:
    probs = np.full((4, 2), 0.5)
    m = compute_metrics(probs, np.array([0, 1, 0, 1]), CLASSES[:2])
    assert m["roc_auc_macro"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[2, 0], [2, 0]]  # argmax takes the first of a tie


def test_perfect_predictions() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[labels]
    m = compute_metrics(probs, labels, CLASSES[:3])
    assert m["accuracy"] == m["macro_f1"] == m["cohen_kappa"] == m["roc_auc_macro"] == 1.0


def test_result_is_plain_json() -> None:
    """It goes into metrics.json and checkpoint metadata as is: no numpy scalars."""
    m = compute_metrics(HAND_PROBS, HAND_LABELS, CLASSES)
    assert json.loads(json.dumps(m)) == m
    assert headline(m) == {k: m[k] for k in HEADLINE_KEYS}
    assert headline({"accuracy": 0.5, "n": 3}) == {"accuracy": 0.5}


@pytest.mark.parametrize(
    ("probs", "labels", "names", "message"),
    [
        (np.ones((3, 4)) / 4, np.zeros(3, int), CLASSES[:3], "4 classes but 3 class names"),
        (np.ones(4) / 4, np.zeros(1, int), CLASSES, r"must be \[N, C\]"),
        (np.ones((3, 4)) / 4, np.zeros(2, int), CLASSES, r"labels must be \[N\] with N = 3"),
        (np.ones((0, 4)), np.zeros(0, int), CLASSES, "no windows to evaluate"),
        (np.ones((2, 4)) / 4, np.array([0, 4]), CLASSES, r"labels must lie in \[0, 3\]"),
        (np.ones((2, 4)) / 4, np.array([-1, 0]), CLASSES, r"labels must lie in \[0, 3\]"),
    ],
)
def test_input_errors_are_clear(probs, labels, names, message) -> None:
    with pytest.raises(EdgeLstmError, match=message):
        compute_metrics(probs, labels, names)


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0], [-5.0, 0.0, 5.0]])
    p = softmax(logits)
    assert p.dtype == np.float32 and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-6)
    assert (p.argmax(axis=1) == logits.argmax(axis=1)).all()


def test_softmax_divides_logits_by_the_temperature() -> None:
    logits = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(softmax(logits, 0.5), [[0.1, 0.9]], rtol=1e-6)  # odds 3 -> 9
    np.testing.assert_allclose(softmax(logits, 2.0), [[1 / (1 + 3**0.5), 1 - 1 / (1 + 3**0.5)]])


def test_summary_lines_has_one_row_per_class() -> None:
    lines = summary_lines(compute_metrics(HAND_PROBS, HAND_LABELS, CLASSES))
    assert lines[0].startswith("windows 6  accuracy 0.6667  macro-F1 0.4889")
    assert lines[1] == "ROC-AUC skipped (class absent): never_seen"
    rows = lines[3:]
    assert [r.split()[0] for r in rows] == CLASSES
    assert rows[1].split()[1:] == ["0.667", "1.000", "0.800", "2"]


def test_plot_confusion_writes_png(tmp_path) -> None:
    m = compute_metrics(HAND_PROBS, HAND_LABELS, CLASSES)
    path = plot_confusion(m, CLASSES, tmp_path / "sub" / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
    raw = plot_confusion(m["confusion_matrix"], CLASSES, tmp_path / "raw.png")
    assert raw.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EdgeLstmError, match=r"shape \(4, 4\) does not match 3 class names"):
        plot_confusion(m, CLASSES[:3], tmp_path / "bad.png")
