"""What each rank ends with: `edgelstm ARGS` or a bare `fit`, with every `fit` call recorded.

    python tests/models/ddp_probe.py PROBE_DIR cli train-teacher --config C --out D
    python tests/models/ddp_probe.py PROBE_DIR fit BATCH_SIZE EPOCHS [ORDER_SEED]

`tests/models/test_distributed.py` runs it under `torchrun` and as one plain process. It wraps
`fit` where `edgelstm train-teacher` and `edgelstm distill` call it; each call on rank R writes
PROBE_DIR/rank{R}-{call:02d}.pt: the weights `fit` left in the model, its history and best
epoch, and a sha256 of the soft targets it trained on. The trainer knows nothing of this (no
environment variable, no option): what the files hold is what each rank computed. `cli` mode
also shrinks the `distill --search` grid to two candidates, so a search takes seconds. `fit`
mode trains a GRU student on the synthetic windows of tests/models/conftest.py, without class
weights or dropout, so one process with batch 2b and two with batch b compute the same
gradients when a batch holds the whole training split; the initial weights are always those of
seed 0, ORDER_SEED (train.seed, default 0) changes only the order of the windows.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
TINY_GRID = {"cell": ("gru", "lstm"), "layers": (1,), "hidden_size": (4,)}


def _recording(real_fit, probe: Path):
    calls = iter(range(1000))

    def fit(model, *args, **kwargs):
        result = real_fit(model, *args, **kwargs)
        soft = kwargs.get("soft_targets")
        record = {
            "rank": int(os.environ.get("RANK", "0")),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "desc": kwargs.get("desc", "train"),
            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "history": result.history,
            "best_epoch": result.best_epoch,
            "soft_sha256": None
            if soft is None
            else hashlib.sha256(np.ascontiguousarray(soft, dtype=np.float32).tobytes()).hexdigest(),
        }
        torch.save(record, probe / f"rank{record['rank']}-{next(calls):02d}.pt")
        return result

    return fit


def _cli(probe: Path, argv: list[str]) -> None:
    import converters.search
    import converters.students
    import edge_lstm.train_teacher
    from edge_lstm.cli import main

    for module in (edge_lstm.train_teacher, converters.students):
        module.fit = _recording(module.fit, probe)
    converters.search.GRID = TINY_GRID
    main.main(args=argv, prog_name="edgelstm")


def _fit(probe: Path, batch_size: int, epochs: int, order_seed: int) -> None:
    sys.path.insert(0, str(REPO))
    from edge_lstm.config import StudentConfig, TrainConfig
    from edge_lstm.models import build_from_model_config
    from edge_lstm.training import fit, seed_everything
    from tests.models.conftest import N_CLASSES, N_FEATURES, synthetic_windows

    train, val = synthetic_windows(256, seed=0), synthetic_windows(96, seed=1)
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=0.01, patience=epochs, seed=order_seed, threads=1
    )
    seed_everything(0)
    model = build_from_model_config(
        "student", N_FEATURES, N_CLASSES, StudentConfig(cell="gru", hidden_size=8)
    )
    _recording(fit, probe)(model, train, val, cfg, desc="fit")


if __name__ == "__main__":
    probe_dir, mode, *rest = sys.argv[1:]
    probe = Path(probe_dir)
    probe.mkdir(parents=True, exist_ok=True)
    if mode == "cli":
        _cli(probe, rest)
    elif mode == "fit":
        _fit(probe, int(rest[0]), int(rest[1]), int(rest[2]) if len(rest) > 2 else 0)
    else:
        raise SystemExit(f"unknown mode {mode!r}: use cli or fit")
