"""Checkpoints: weights in model.pt (a bare state_dict), everything else in model.json.

The weights file holds tensors only, so loading it with `torch.load(weights_only=True)` never
runs pickled code; the JSON beside it says how to rebuild the model and how to feed it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edge_lstm.config import Config, StudentConfig, TeacherConfig, config_to_dict
from edge_lstm.errors import CheckpointError
from edge_lstm.models import MODEL_KINDS, build_from_model_config, count_parameters

if TYPE_CHECKING:
    from edge_lstm.data import PreparedData

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"
FORMAT_VERSION = 2  # 2: window_stats feeds log std (1 fed std); format 1 loads without them


@dataclass
class CheckpointMeta:
    """What a checkpoint needs besides its weights: architecture, data contract, provenance."""

    kind: str  # "teacher" | "student"
    model_config: dict[str, Any]  # TeacherConfig / StudentConfig dump
    features: list[str]
    classes: list[str]
    normalization: dict[str, Any]  # Normalization.to_dict()
    window: int
    hop: int
    sample_period_s: float
    config: dict[str, Any]  # the full Config dump
    metrics: dict[str, Any]
    n_parameters: int
    name: str
    version: str


def meta_for(
    kind: str,
    model: nn.Module,
    model_config: TeacherConfig | StudentConfig,
    cfg: Config,
    data: PreparedData,
    metrics: dict[str, Any],
    name: str,
) -> CheckpointMeta:
    """The meta of a model just trained on `data` under `cfg`, versioned by the UTC time."""
    return CheckpointMeta(
        kind=kind,
        model_config=model_config.model_dump(mode="json"),
        features=list(data.features),
        classes=list(data.classes),
        normalization=data.normalization.to_dict(),
        window=cfg.data.window,
        hop=cfg.data.stride,
        sample_period_s=float(data.sample_period_s),
        config=config_to_dict(cfg),
        metrics=metrics,
        n_parameters=count_parameters(model),
        name=name,
        version=time.strftime("%Y%m%d-%H%M%S", time.gmtime()),
    )


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # in eval mode
    meta: CheckpointMeta
    path: Path  # the checkpoint directory


def save_checkpoint(out_dir: Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Writes out_dir/model.pt and out_dir/model.json; returns out_dir."""
    if meta.kind not in MODEL_KINDS:
        raise CheckpointError(f"checkpoint kind must be one of {MODEL_KINDS}, got {meta.kind!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, out_dir / WEIGHTS_FILE)
    payload = {"format_version": FORMAT_VERSION, **asdict(meta)}
    (out_dir / META_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    log.debug("saved %s checkpoint to %s", meta.kind, out_dir)
    return out_dir


def _resolve_dir(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    if path.name in (WEIGHTS_FILE, META_FILE) and path.parent.is_dir():
        return path.parent
    raise CheckpointError(f"{path}: no checkpoint here (expected a directory with {WEIGHTS_FILE})")


def read_meta(path: Path) -> CheckpointMeta:
    """Reads and checks model.json of a checkpoint directory (or of the dir of model.pt)."""
    ckpt_dir = _resolve_dir(path)
    meta_path = ckpt_dir / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt_dir}: {META_FILE} is missing; not an edgelstm checkpoint")
    try:
        raw = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object")
    version = raw.pop("format_version", None)
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(
            f"{meta_path}: checkpoint format {version!r} is not supported "
            f"(this edgelstm reads format {FORMAT_VERSION})"
        )
    model_config = raw.get("model_config")
    if version == 1 and isinstance(model_config, dict) and model_config.get("window_stats"):
        raise CheckpointError(
            f"{meta_path}: a format-1 model with window_stats, whose head was trained on each "
            "channel's std; this edgelstm feeds log std: train it again"
        )
    names = {f.name for f in fields(CheckpointMeta)}
    missing = sorted(names - raw.keys())
    if missing:
        raise CheckpointError(f"{meta_path}: missing keys {', '.join(missing)}")
    meta = CheckpointMeta(**{k: raw[k] for k in names})
    if meta.kind not in MODEL_KINDS:
        raise CheckpointError(f"{meta_path}: kind must be one of {MODEL_KINDS}, got {meta.kind!r}")
    return meta


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Rebuilds the model from model.json and loads model.pt (tensors only) in eval mode."""
    ckpt_dir = _resolve_dir(path)
    meta = read_meta(ckpt_dir)
    weights_path = ckpt_dir / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{ckpt_dir}: {WEIGHTS_FILE} is missing")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(
            f"{weights_path}: cannot be read as weights ({type(exc).__name__}); it is damaged "
            "or not a tensors-only state_dict written by edgelstm: train or copy it again"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights_path}: expected a state_dict, got {type(state).__name__}")
    model = build_from_model_config(
        meta.kind, len(meta.features), len(meta.classes), meta.model_config
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"{ckpt_dir}: weights do not match {META_FILE} ({first[0].strip()})"
        ) from None
    n_params = count_parameters(model)
    if n_params != meta.n_parameters:
        raise CheckpointError(
            f"{ckpt_dir}: {META_FILE} says {meta.n_parameters} parameters, weights have {n_params}"
        )
    model.eval()
    return LoadedCheckpoint(model=model, meta=meta, path=ckpt_dir)
