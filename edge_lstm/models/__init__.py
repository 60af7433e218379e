"""The teacher (BiLSTM + attention) and the streamable student (causal GRU/LSTM)."""

from edge_lstm.models.factory import (
    MODEL_KINDS,
    build_from_model_config,
    build_model,
    count_parameters,
    model_config,
)
from edge_lstm.models.student import Student
from edge_lstm.models.teacher import Teacher

__all__ = [
    "MODEL_KINDS",
    "Student",
    "Teacher",
    "build_from_model_config",
    "build_model",
    "count_parameters",
    "model_config",
]
