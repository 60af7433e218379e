"""Builds a teacher or student from a config, so training and checkpoint loading agree."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from torch import nn

from edge_lstm.config import Config, StudentConfig, TeacherConfig
from edge_lstm.errors import CheckpointError
from edge_lstm.models.student import Student
from edge_lstm.models.teacher import Teacher

MODEL_KINDS = ("teacher", "student")


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")


def model_config(kind: str, cfg: Config) -> TeacherConfig | StudentConfig:
    """The config section that sizes a model of this kind."""
    _check_kind(kind)
    return cfg.teacher if kind == "teacher" else cfg.student


def build_model(kind: str, n_features: int, n_classes: int, cfg: Config) -> nn.Module:
    """A freshly initialised teacher or student sized by `cfg` (seed torch first)."""
    return build_from_model_config(kind, n_features, n_classes, model_config(kind, cfg))


def build_from_model_config(
    kind: str,
    n_features: int,
    n_classes: int,
    section: TeacherConfig | StudentConfig | dict[str, Any],
) -> nn.Module:
    """Builds from a model section or its JSON dump (as stored in a checkpoint's meta)."""
    _check_kind(kind)
    section_type = TeacherConfig if kind == "teacher" else StudentConfig
    if isinstance(section, dict):
        try:
            section = section_type.model_validate(section)
        except ValidationError as exc:
            raise CheckpointError(
                f"invalid {kind} model_config: {exc.errors()[0]['msg']}"
            ) from None
    if not isinstance(section, section_type):
        raise ValueError(f"a {kind} needs a {section_type.__name__}, got {type(section).__name__}")
    model_type = Teacher if kind == "teacher" else Student
    return model_type(n_features, n_classes, section)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
