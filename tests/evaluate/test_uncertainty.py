"""Run-level bootstrap intervals, seed summaries and the decimals they allow."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from edge_lstm.errors import EdgeLstmError
from edge_lstm.uncertainty import (
    confusion_by_run,
    decimals_for,
    macro_f1_from_confusion,
    paired_bootstrap,
    resample_weights,
    run_bootstrap,
    run_strata,
    summarize_seeds,
)


def _windows(seed: int = 0, runs_per_class: int = 3, classes: int = 4, per_run: int = 30):
    """Runs of one class each (class 0 = normal); predictions right 85 % of the time."""
    rng = np.random.default_rng(seed)
    labels, run_ids = [], []
    for c in range(classes):
        for r in range(runs_per_class):
            labels += [c] * per_run
            run_ids += [f"c{c}-r{r}"] * per_run
    y = np.asarray(labels)
    pred = np.where(rng.random(len(y)) < 0.85, y, rng.integers(0, classes, len(y)))
    return y, pred, np.asarray(run_ids)


def test_whole_split_figures_equal_scikit_learn() -> None:
    y, pred, runs = _windows()
    per_run, names = confusion_by_run(y, pred, runs, 5)  # class 4 absent: macro-F1 skips it
    assert len(names) == 12 and per_run.sum() == len(y)
    assert macro_f1_from_confusion(per_run.sum(axis=0)) == pytest.approx(
        f1_score(y, pred, average="macro")
    )
    intervals = run_bootstrap(y, pred, runs, 5, n_boot=300)
    assert intervals["accuracy"].estimate == pytest.approx(accuracy_score(y, pred))
    assert intervals["macro_f1"].estimate == pytest.approx(f1_score(y, pred, average="macro"))


def test_interval_brackets_the_estimate_and_narrows_with_more_runs() -> None:
    few = run_bootstrap(*_windows(runs_per_class=3), 4, n_boot=500)["macro_f1"]
    many = run_bootstrap(*_windows(runs_per_class=30), 4, n_boot=500)["macro_f1"]
    for interval in (few, many):
        assert interval.low <= interval.estimate <= interval.high
    assert many.high - many.low < few.high - few.low
    assert few.units == 12 and "12 runs" in few.text()


def test_resamples_keep_the_runs_of_every_class() -> None:
    y, pred, runs = _windows(runs_per_class=3)
    per_run, _ = confusion_by_run(y, pred, runs, 4)
    strata = run_strata(per_run)
    assert sorted(np.bincount(strata).tolist()) == [3, 3, 3, 3]
    weights = resample_weights(strata, 200, seed=1)
    for c in range(4):
        assert (weights[:, strata == c].sum(axis=1) == 3).all()
    assert (weights.std(axis=0) > 0).all()  # runs really are drawn, not kept


def test_fault_run_with_normal_readings_counts_as_its_fault() -> None:
    y = np.asarray([0, 0, 0, 2, 2, 0, 0])
    runs = np.asarray(["a", "a", "a", "a", "a", "b", "b"])
    per_run, names = confusion_by_run(y, y, runs, 3)
    assert names == ["a", "b"] and run_strata(per_run).tolist() == [2, 0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(EdgeLstmError, match="one entry per window"):
        confusion_by_run(np.zeros(3, int), np.zeros(2, int), np.asarray(["a"] * 3), 2)
    with pytest.raises(EdgeLstmError, match="empty"):
        run_bootstrap(np.zeros(0, int), np.zeros(0, int), np.asarray([], str), 2)
    with pytest.raises(EdgeLstmError, match="one entry per window"):
        paired_bootstrap(
            np.zeros(3, int), np.zeros(3, int), np.zeros(2, int), np.asarray(["a"] * 3), 2
        )
    with pytest.raises(EdgeLstmError):
        summarize_seeds([])


def _harder_runs(seed: int = 0, runs_per_class: int = 6, classes: int = 4, per_run: int = 40):
    """Runs whose difficulty differs (right 55–100 % of the time), and a rival that makes the
    same errors plus a few of its own: the two are correlated run by run."""
    y, _, runs = _windows(seed, runs_per_class, classes, per_run)
    rng = np.random.default_rng(seed + 1)
    skill = np.repeat(rng.uniform(0.55, 1.0, classes * runs_per_class), per_run)
    wrong = (y + 1) % classes
    pred = np.where(rng.random(len(y)) < skill, y, wrong)
    rival = np.where(rng.random(len(y)) < 0.06, wrong, pred)
    return y, pred, rival, runs


def test_identical_predictions_differ_by_exactly_zero() -> None:
    y, pred, runs = _windows()
    for interval in paired_bootstrap(y, pred, pred, runs, 4, n_boot=300).values():
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
        assert interval.units == 12 and interval.n_boot == 300


def test_better_on_every_run_is_above_zero() -> None:
    y, pred, runs = _windows()
    worse = pred.copy()
    for run in np.unique(runs):  # two more wrong windows in every run
        right = np.flatnonzero((runs == run) & (pred == y))[:2]
        worse[right] = (y[right] + 1) % 4
    paired = paired_bootstrap(y, pred, worse, runs, 4, n_boot=500)
    assert paired["accuracy"].estimate == pytest.approx(24 / len(y))
    for interval in paired.values():
        assert 0 < interval.low <= interval.estimate <= interval.high
    assert paired_bootstrap(y, worse, pred, runs, 4, n_boot=500)["accuracy"].high < 0


def test_paired_estimate_and_resamples_are_those_of_the_marginal_intervals() -> None:
    y, pred, rival, runs = _harder_runs()
    paired = paired_bootstrap(y, pred, rival, runs, 4, n_boot=400, seed=3)
    own = run_bootstrap(y, pred, runs, 4, n_boot=400, seed=3)
    other = run_bootstrap(y, rival, runs, 4, n_boot=400, seed=3)
    for name in ("accuracy", "macro_f1"):
        assert paired[name].estimate == pytest.approx(own[name].estimate - other[name].estimate)
    # a rival wrong on every window scores 0 in every resample: the difference is the model's
    always_wrong = paired_bootstrap(y, pred, (y + 1) % 4, runs, 4, n_boot=400, seed=3)
    assert always_wrong["accuracy"] == own["accuracy"]


def test_paired_interval_is_narrower_than_the_unpaired_one_for_correlated_models() -> None:
    y, pred, rival, runs = _harder_runs()
    paired = paired_bootstrap(y, pred, rival, runs, 4, n_boot=1000)
    own = run_bootstrap(y, pred, runs, 4, n_boot=1000)
    other = run_bootstrap(y, rival, runs, 4, n_boot=1000)
    for name in ("accuracy", "macro_f1"):
        width = paired[name].high - paired[name].low
        a, b = own[name].high - own[name].low, other[name].high - other[name].low
        assert width < 0.5 * np.hypot(a, b)  # independent resamples would give about hypot(a, b)
        assert paired[name].low > 0  # the rival's extra errors are shown, though
        assert own[name].low < other[name].high  # which the marginal intervals do not show


def test_seed_summary_and_decimals() -> None:
    s = summarize_seeds([0.990, 0.992, 0.985])
    assert s.n == 3 and s.mean == pytest.approx(0.989)
    assert s.sd == pytest.approx(np.std([0.990, 0.992, 0.985], ddof=1))
    assert s.low < s.mean < s.high
    assert s.text() == "0.989 ± 0.004 (3 seeds)"
    one = summarize_seeds([0.9])
    assert one.sd == 0.0 and one.low is None and "no spread" in one.text()
    assert [decimals_for(u) for u in (0.2, 0.03, 0.004, 1e-7, 0.0)] == [1, 2, 3, 4, 4]
    assert decimals_for(0.2, least=2) == 2 and decimals_for(1e-7, most=3) == 3
