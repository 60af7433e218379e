"""Tiny checkpoints and deployment folders for the converter and runtime tests.

Plain functions (not fixtures) so tests/runtime can build the folder it needs with its own
cell, layer count and hop.
"""

from __future__ import annotations

from pathlib import Path


def tiny_config_for(
    cfg,
    cell: str = "gru",
    layers: int = 1,
    hidden_size: int | None = None,
    window_stats: bool | None = None,
):
    """`cfg` with the student's cell and layer count replaced, and its width and statistics
    where given (None keeps the config's)."""
    update: dict = {"cell": cell, "layers": layers}
    if window_stats is not None:
        update["window_stats"] = window_stats
    if hidden_size:
        update["hidden_size"] = hidden_size
    student = cfg.student.model_copy(update=update)
    return cfg.model_copy(update={"student": student})


def make_tiny_checkpoint(
    out_dir: Path,
    cfg,
    kind: str = "student",
    cell: str = "gru",
    layers: int = 1,
    hop: int | None = None,
    epochs: int = 0,
    data=None,
    hidden_size: int | None = None,
    window_stats: bool | None = None,
) -> Path:
    """Saves a small teacher or student (trained `epochs` epochs, 0 = random init) with the
    metadata `edgelstm export` needs; returns the checkpoint folder."""
    import torch

    from edge_lstm.checkpoint import CheckpointMeta, save_checkpoint
    from edge_lstm.config import config_to_dict
    from edge_lstm.data.prepare import prepare_data
    from edge_lstm.models import build_model, count_parameters, model_config
    from edge_lstm.training.trainer import fit

    cfg = tiny_config_for(cfg, cell, layers, hidden_size, window_stats)
    data = data if data is not None else prepare_data(cfg)
    torch.manual_seed(0)
    model = build_model(kind, len(data.features), len(data.classes), cfg)
    if epochs:
        train_cfg = cfg.train.model_copy(update={"epochs": epochs, "threads": 1})
        fit(model, data.train, data.val, train_cfg, class_weights=data.class_weights())
    model.eval()
    section = model_config(kind, cfg)
    name = f"{kind}-{cell}{section.hidden_size}x{layers}" if kind == "student" else "teacher"
    meta = CheckpointMeta(
        kind=kind,
        model_config=section.model_dump(mode="json"),
        features=list(data.features),
        classes=list(data.classes),
        normalization=data.normalization.to_dict(),
        window=cfg.data.window,
        hop=hop or cfg.data.stride,
        sample_period_s=float(data.sample_period_s),
        config=config_to_dict(cfg),
        metrics={},
        n_parameters=count_parameters(model),
        name=name,
        version="test-1",
    )
    return save_checkpoint(Path(out_dir), model, meta)


def make_tiny_deploy_dir(
    tmp_dir: Path,
    cfg,
    cell: str = "gru",
    layers: int = 1,
    hop: int | None = None,
    window_stats: bool | None = None,
) -> Path:
    """A deployment folder (model.onnx, step.onnx, manifest.json) of an untrained student."""
    from converters.export_onnx import export

    tmp_dir = Path(tmp_dir)
    ckpt = make_tiny_checkpoint(
        tmp_dir / "checkpoint", cfg, cell=cell, layers=layers, hop=hop, window_stats=window_stats
    )
    deploy = tmp_dir / "deploy"
    export(ckpt, deploy)
    return deploy
