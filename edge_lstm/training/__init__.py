"""The trainer shared by teacher and student: fit, seeding, DDP setup, training curves, and
the training-state file resumed runs continue from."""

from edge_lstm.training.plots import plot_history
from edge_lstm.training.predict import predict_logits, predict_proba
from edge_lstm.training.seeding import seed_everything
from edge_lstm.training.state import STATE_FILE, TrainStateError, remove_train_state
from edge_lstm.training.trainer import TrainResult, fit

__all__ = [
    "STATE_FILE",
    "TrainResult",
    "TrainStateError",
    "fit",
    "plot_history",
    "predict_logits",
    "predict_proba",
    "remove_train_state",
    "seed_everything",
]
