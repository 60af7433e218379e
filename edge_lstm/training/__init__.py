"""The trainer shared by teacher and student: fit, seeding, DDP setup, training curves."""

from edge_lstm.training.plots import plot_history
from edge_lstm.training.predict import predict_logits, predict_proba
from edge_lstm.training.seeding import seed_everything
from edge_lstm.training.trainer import TrainResult, fit

__all__ = [
    "TrainResult",
    "fit",
    "plot_history",
    "predict_logits",
    "predict_proba",
    "seed_everything",
]
