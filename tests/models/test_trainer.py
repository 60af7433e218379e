"""fit(): early stopping, best weights, budget, reproducibility, samplers and soft targets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_lstm.config import StudentConfig, TrainConfig
from edge_lstm.data import WindowSet
from edge_lstm.errors import EdgeLstmError
from edge_lstm.models import Student
from edge_lstm.training import fit, plot_history, predict_logits, seed_everything
from tests.models.conftest import N_CLASSES, N_FEATURES, synthetic_windows


def _student(seed: int = 0) -> Student:
    seed_everything(seed)
    return Student(N_FEATURES, N_CLASSES, StudentConfig(cell="gru", hidden_size=16))


def _val_loss(model: Student, val: WindowSet) -> float:
    logits = torch.from_numpy(predict_logits(model, val.x))
    return torch.nn.functional.cross_entropy(logits, torch.from_numpy(val.y)).item()


def test_learns_and_keeps_the_best_weights(train_windows, val_windows) -> None:
    model = _student()
    before = _val_loss(model, val_windows)
    result = fit(model, train_windows, val_windows, TrainConfig(epochs=6, batch_size=32, lr=0.02))
    assert len(result.history) == 6
    assert result.stop_reason == "epochs"
    best = min(h["val_loss"] for h in result.history)
    assert result.best_val_loss == pytest.approx(best)
    assert result.history[result.best_epoch - 1]["val_loss"] == pytest.approx(best)
    assert _val_loss(model, val_windows) == pytest.approx(best, rel=1e-5)
    assert best < before * 0.7
    assert not model.training
    assert set(result.history[0]) == {
        "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
    }  # fmt: skip


def test_early_stopping_with_patience(train_windows) -> None:
    """Validation labels unrelated to the inputs: val loss rises as the model fits train."""
    val = synthetic_windows(96, seed=5, permute_labels=True)
    model = _student()
    cfg = TrainConfig(epochs=40, batch_size=32, lr=0.05, patience=2)
    result = fit(model, train_windows, val, cfg)
    assert result.stop_reason == "patience"
    assert len(result.history) == result.best_epoch + cfg.patience < cfg.epochs
    assert _val_loss(model, val) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_same_seed_same_history(train_windows, val_windows) -> None:
    def run(seed: int) -> list[dict]:
        cfg = TrainConfig(epochs=3, batch_size=32, seed=seed)
        history = fit(_student(), train_windows, val_windows, cfg).history
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    first = run(0)
    assert run(0) == first
    assert run(1) != first


def test_time_budget_stops_after_the_epoch_that_crosses_it(train_windows, val_windows) -> None:
    cfg = TrainConfig(epochs=20, batch_size=64, max_minutes=1e-6)
    result = fit(_student(), train_windows, val_windows, cfg)
    assert len(result.history) == 1
    assert result.stop_reason == "time budget"


def test_cosine_schedule_lowers_the_learning_rate(train_windows, val_windows) -> None:
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.01, schedule="cosine")
    lrs = [h["lr"] for h in fit(_student(), train_windows, val_windows, cfg).history]
    assert lrs[0] == pytest.approx(0.01)
    assert all(a > b for a, b in itertools.pairwise(lrs))


def test_soft_targets_travel_with_their_windows(train_windows, val_windows) -> None:
    """A distillation loss gets each window's own soft-target row."""
    soft = np.eye(N_CLASSES, dtype=np.float32)[train_windows.y] * 5.0
    seen = []

    def loss_fn(logits, y, soft_batch):
        assert soft_batch is not None and soft_batch.shape == logits.shape
        assert torch.equal(soft_batch.argmax(1), y)
        seen.append(len(y))
        return torch.nn.functional.kl_div(
            torch.log_softmax(logits, 1), torch.softmax(soft_batch, 1), reduction="batchmean"
        )

    cfg = TrainConfig(epochs=2, batch_size=50)
    result = fit(_student(), train_windows, val_windows, cfg, loss_fn, soft_targets=soft)
    assert sum(seen) == 2 * len(train_windows)
    assert result.history[-1]["val_acc"] > 0.4


def test_class_weights_and_balanced_sampler(val_windows) -> None:
    """With a 1-in-16 minority class, both balancing options still learn it."""
    base = synthetic_windows(512, seed=7)
    keep = (base.y != 3) | (np.arange(len(base.y)) % 4 == 0)
    train = WindowSet(
        base.x[keep], base.y[keep], base.run_ids[keep], base.end_ts[keep], base.onset[keep]
    )
    counts = np.bincount(train.y, minlength=N_CLASSES)
    weights = (counts.sum() / (N_CLASSES * counts)).astype(np.float32)
    cfg = TrainConfig(epochs=5, batch_size=32, lr=0.02)
    for kwargs in ({"class_weights": weights}, {"balanced_sampler": True}):
        model = _student()
        fit(model, train, val_windows, cfg, **kwargs)
        pred = predict_logits(model, val_windows.x).argmax(1)
        minority = val_windows.y == 3
        assert (pred[minority] == 3).mean() > 0.5, kwargs


def test_input_errors(train_windows, val_windows) -> None:
    empty = WindowSet(train_windows.x[:0], train_windows.y[:0], train_windows.run_ids[:0],
                      train_windows.end_ts[:0], train_windows.onset[:0])  # fmt: skip
    with pytest.raises(EdgeLstmError, match="no training windows"):
        fit(_student(), empty, val_windows, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="soft_targets has 3 rows"):
        fit(_student(), train_windows, val_windows, TrainConfig(epochs=1),
            soft_targets=np.zeros((3, N_CLASSES)))  # fmt: skip


def test_plot_history(tmp_path: Path, train_windows, val_windows) -> None:
    result = fit(_student(), train_windows, val_windows, TrainConfig(epochs=2, batch_size=64))
    path = plot_history(result.history, tmp_path / "curves" / "training_curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_lr_scaling_for_the_global_batch(train_windows, val_windows) -> None:
    """`batch_size` is per process; lr_scaling rescales lr by the world size (default none)."""
    from edge_lstm.training.trainer import scaled_lr

    assert TrainConfig().lr_scaling == "none" and TrainConfig().max_minutes is None
    assert scaled_lr(0.01, "none", 4) == 0.01
    assert scaled_lr(0.01, "linear", 4) == pytest.approx(0.04)
    assert scaled_lr(0.01, "sqrt", 4) == pytest.approx(0.02)
    assert all(scaled_lr(0.01, rule, 1) == 0.01 for rule in ("none", "linear", "sqrt"))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, lr_scaling="linear")
    result = fit(_student(), train_windows, val_windows, cfg)  # one process: unchanged
    assert (result.world_size, result.global_batch_size, result.lr) == (1, 64, 0.01)
    assert result.history[0]["lr"] == 0.01
