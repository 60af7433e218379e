"""The training-state file that lets an interrupted `fit` continue: `<out>/train_state.pt`.

`fit(..., state_path=P)` rewrites P after every completed epoch, on rank 0 only, atomically:
`torch.save` into a temporary file in the same folder, flush, fsync, `os.replace`, fsync of
the folder. A reader therefore sees the previous epoch's state or the new one, never half a
file, whatever kills the process (SIGKILL, preemption, power cut).

The file is one `torch.save`d dict holding only tensors, numbers, strings, None, lists,
tuples and dicts, so `load_state` reads it with `torch.load(weights_only=True)` (no pickled
code runs):

- `format`, `version`: "edgelstm-train-state", 1
- `fingerprint`: what the run depends on (train config, model architecture and parameter
  shapes, a digest of the data, the world size, the caller's `state_key`); a resume refuses
  a state whose fingerprint differs, naming the keys
- `epoch`: the last completed epoch; `finished`, `stop_reason`: whether the run ended there
  and why
- `elapsed_s`: training seconds so far, summed over resumed processes (for the time budget)
- `model`, `optimizer`, `scheduler`, `scaler`: their `state_dict()`s after that epoch
- `best`: early stopping's `loss`, `epoch` and `state` (the best weights); the patience
  counter is `epoch - best.epoch`
- `history`: the per-epoch records so far
- `sampler`: `epoch` (what DistributedSampler.set_epoch got) and `generator` (the state of
  the generator that shuffles single-process runs, or None)
- `rng`: `python`, `numpy`, `torch` (CPU) and `cuda` (this rank's device, or None)

A finished state stays until its caller has written its outputs (`train_teacher` then calls
`remove_train_state`), so a process killed between the end of `fit` and the checkpoint
resumes without training again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_lstm.errors import EdgeLstmError

STATE_FILE = "train_state.pt"
FORMAT = "edgelstm-train-state"
VERSION = 1

# TrainConfig keys a resumed run may change: they never change what is computed
RESUMABLE_KEYS = ("max_minutes", "threads")


class TrainStateError(EdgeLstmError):
    """A training-state file is unreadable or belongs to another run."""


def fingerprint(
    model: nn.Module,
    train_cfg: dict[str, Any],
    arrays: dict[str, np.ndarray | None],
    world_size: int,
    state_key: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the state."""
    return {
        "train": {k: v for k, v in train_cfg.items() if k not in RESUMABLE_KEYS},
        "model": {
            "class": type(model).__name__,
            "architecture": repr(model),
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        },
        "data": {name: _digest(a) for name, a in arrays.items()},
        "world_size": world_size,
        "config": state_key or {},
    }


def _digest(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return f"{a.shape} sha256:{h.hexdigest()[:16]}"


def differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprints, with both values."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now), key=str):
            out += differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    if saved == now:
        return []
    name = prefix.rstrip(".")
    if name == "model.architecture":
        return [f"{name} differs"]
    return [f"{name}: {_short(saved)} in the state, {_short(now)} now"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every random source a training epoch draws from, in weights_only-loadable form."""
    np_state = np.random.get_state(legacy=False)
    cuda = None
    if device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    """The inverse of `capture_rng`."""
    random.setstate(_as_tuples(rng["python"]))
    np_rng = rng["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_rng["bit_generator"],
            "state": {"key": np_rng["key"].numpy().astype(np.uint32), "pos": np_rng["pos"]},
            "has_gauss": np_rng["has_gauss"],
            "gauss": np_rng["gauss"],
        }
    )
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples random.getstate gave."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Writes `state` to `path` atomically: temp file in the same folder, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Makes the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(path: Path) -> None:
    """Temp files a killed writer left beside `path` (only one run writes a folder's state)."""
    path = Path(path)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def load_state(path: Path) -> dict[str, Any]:
    """Reads a state file with `torch.load(weights_only=True)`; TrainStateError if it is not
    one this version wrote."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same one line
        reason = " ".join(str(exc).split())[:200]
        raise TrainStateError(
            f"{path}: not a readable training state ({reason}); delete it or run without --resume"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainStateError(f"{path}: not an edgelstm training state")
    if state.get("version") != VERSION:
        raise TrainStateError(
            f"{path}: training state version {state.get('version')}, this edgelstm reads "
            f"{VERSION}; run without --resume to start over"
        )
    return state


def check_fingerprint(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuses a state written by another config, model shape, data or world size."""
    diffs = differences(saved, now)
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise TrainStateError(
            f"{path} belongs to another run: {'; '.join(diffs[:3])}{more}. Run without "
            "--resume to start over (the state is then replaced), or restore the old settings"
        )


def remove_train_state(path: Path | None) -> None:
    """Deletes a run's state file (and stale temp files) once its outputs are written."""
    if path is None:
        return
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    remove_stale_temp_files(path)
