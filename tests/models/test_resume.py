"""Resumable runs: the training-state file, `fit(resume=True)`, and a SIGKILLed
`edgelstm train-teacher` that continues with --resume to the same weights as a run never
interrupted (exactly equal: one torch thread on CPU is deterministic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from edge_lstm.config import StudentConfig, TrainConfig
from edge_lstm.training import fit, seed_everything
from edge_lstm.training.state import (
    STATE_FILE,
    TrainStateError,
    load_state,
    remove_train_state,
    save_state,
)
from tests.conftest import write_config
from tests.models.conftest import N_CLASSES, N_FEATURES

EDGELSTM = Path(sys.executable).parent / "edgelstm"


class _Interrupt(Exception):
    """Stands in for the process dying in the middle of an epoch."""


def _student(hidden: int = 16, dropout: float = 0.2):
    from edge_lstm.models import Student

    seed_everything(0)
    cfg = StudentConfig(cell="gru", hidden_size=hidden, layers=2, dropout=dropout)
    return Student(N_FEATURES, N_CLASSES, cfg)


def _loss(stop_at_batch: int | None = None):
    """Plain cross-entropy that raises _Interrupt at the given batch (counted over epochs)."""
    calls = [0]

    def loss(logits, y, _soft):
        calls[0] += 1
        if calls[0] == stop_at_batch:
            raise _Interrupt
        return F.cross_entropy(logits, y)

    return loss


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize(
    ("schedule", "balanced"), [("plateau", False), ("cosine", True)], ids=["plateau", "cosine"]
)
def test_fit_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, train_windows, val_windows, schedule: str, balanced: bool
) -> None:
    """Killed in epoch 3, resumed from the state after epoch 2: same history, same weights
    (dropout, the schedule, AdamW moments and the data order all continue)."""
    cfg = TrainConfig(epochs=5, batch_size=32, lr=0.02, schedule=schedule, patience=5)
    kwargs = {"balanced_sampler": balanced}
    reference = _student()
    expected = fit(reference, train_windows, val_windows, cfg, _loss(), **kwargs)

    state = tmp_path / STATE_FILE
    batches = -(-len(train_windows) // cfg.batch_size)
    with pytest.raises(_Interrupt):
        fit(_student(), train_windows, val_windows, cfg, _loss(2 * batches + 3),
            state_path=state, **kwargs)  # fmt: skip
    saved = load_state(state)
    assert (saved["epoch"], saved["finished"]) == (2, False)
    assert not list(tmp_path.glob("*.tmp"))

    resumed = _student()
    result = fit(resumed, train_windows, val_windows, cfg, _loss(), state_path=state,
                 resume=True, **kwargs)  # fmt: skip
    assert result.resumed_after_epoch == 2
    assert _without_seconds(result.history) == _without_seconds(expected.history)
    assert result.best_epoch == expected.best_epoch
    assert result.best_val_loss == expected.best_val_loss
    assert _max_diff(_weights(resumed), _weights(reference)) == 0.0


def test_state_file_contents_and_a_finished_run(tmp_path: Path, train_windows, val_windows):
    """Loadable with weights_only=True; kept after fit, marked finished, so resuming it trains
    nothing and gives the same result; remove_train_state deletes it."""
    state = tmp_path / "run" / STATE_FILE
    cfg = TrainConfig(epochs=2, batch_size=64)
    first = _student()
    done = fit(first, train_windows, val_windows, cfg, state_path=state)
    saved = torch.load(state, weights_only=True)
    assert set(saved) == {
        "format", "version", "fingerprint", "epoch", "finished", "stop_reason", "elapsed_s",
        "model", "optimizer", "scheduler", "scaler", "best", "history", "sampler", "rng",
    }  # fmt: skip
    assert saved["finished"] and saved["epoch"] == 2 and saved["stop_reason"] == "epochs"
    assert set(saved["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert saved["sampler"]["epoch"] == 2 and saved["sampler"]["generator"] is not None
    assert saved["best"]["epoch"] == done.best_epoch

    again = _student()
    raising = _loss(stop_at_batch=1)  # raises if any batch trains
    replay = fit(again, train_windows, val_windows, cfg, raising, state_path=state, resume=True)
    assert replay.history == done.history and replay.resumed_after_epoch == 2
    assert _max_diff(_weights(again), _weights(first)) == 0.0

    (state.parent / f".{STATE_FILE}.stale.tmp").write_bytes(b"half a file")
    remove_train_state(state)
    assert list(state.parent.iterdir()) == []


def test_resume_without_a_state_starts_fresh(tmp_path: Path, train_windows, val_windows, caplog):
    caplog.set_level("WARNING")
    result = fit(_student(), train_windows, val_windows, TrainConfig(epochs=1, batch_size=64),
                 state_path=tmp_path / STATE_FILE, resume=True, desc="t")  # fmt: skip
    assert result.resumed_after_epoch == 0 and len(result.history) == 1
    notes = [r.getMessage() for r in caplog.records if "no training state" in r.getMessage()]
    assert notes == [f"t: no training state at {tmp_path / STATE_FILE}; starting from epoch 1"]
    with pytest.raises(ValueError, match="needs the state_path"):
        fit(_student(), train_windows, val_windows, TrainConfig(epochs=1), resume=True)


def test_a_state_of_another_run_is_refused(tmp_path: Path, train_windows, val_windows) -> None:
    state = tmp_path / STATE_FILE
    cfg = TrainConfig(epochs=2, batch_size=64)
    with pytest.raises(_Interrupt):
        fit(_student(), train_windows, val_windows, cfg, _loss(5), state_path=state)

    def resume(model, train_cfg, train=train_windows):
        fit(model, train, val_windows, train_cfg, state_path=state, resume=True)

    with pytest.raises(TrainStateError, match=r"another run: train\.lr: 0\.002 in the state"):
        resume(_student(), cfg.model_copy(update={"lr": 0.01}))
    with pytest.raises(TrainStateError, match=r"model\.architecture differs.*model\.shapes"):
        resume(_student(hidden=8), cfg)
    shuffled = train_windows.__class__(
        train_windows.x[::-1].copy(), train_windows.y[::-1].copy(), train_windows.run_ids,
        train_windows.end_ts, train_windows.onset,
    )  # fmt: skip
    with pytest.raises(TrainStateError, match=r"data\.train_x"):
        resume(_student(), cfg, shuffled)
    # the time budget and the thread count may change on resume
    resume(_student(), cfg.model_copy(update={"max_minutes": 30.0, "threads": 1}))

    state.write_bytes(b"not a torch file")
    with pytest.raises(TrainStateError, match="not a readable training state"):
        resume(_student(), cfg)


def test_save_state_is_atomic(tmp_path: Path, monkeypatch) -> None:
    """A writer that dies mid-save leaves the previous state and no temp file."""
    path = tmp_path / STATE_FILE
    save_state(path, {"epoch": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_state(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


# --- a real process, SIGKILLed after its first epoch -------------------------------------------


def _start(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [str(EDGELSTM), "train-teacher", "--config", str(config), "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def test_sigkilled_train_teacher_resumes_to_the_same_weights(
    tiny_data: Path, tmp_path: Path
) -> None:
    """The reference run (started with --resume into an empty folder: the one-line note) and
    the run to be killed start together; the killed one is resumed while the reference ends."""
    epochs = 6
    config = write_config(
        tmp_path / "cfg.yaml", tiny_data,
        train={"epochs": epochs, "patience": epochs, "batch_size": 32, "threads": 1, "seed": 3},
        teacher={"dropout": 0.2},
    )  # fmt: skip
    ref_dir, cut_dir = tmp_path / "reference", tmp_path / "interrupted"
    started = time.monotonic()
    reference = _start(config, ref_dir, "--resume")
    victim = _start(config, cut_dir)
    try:
        deadline = time.monotonic() + 90
        while not (cut_dir / STATE_FILE).exists():
            assert victim.poll() is None, victim.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no train_state.pt within 90 s"
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        killed_after = load_state(cut_dir / STATE_FILE)["epoch"]
        assert 1 <= killed_after < epochs
        assert not (cut_dir / "model.pt").exists()

        resumed = _start(config, cut_dir, "--resume")
        res_out, res_err = _finish(resumed)
        ref_out, ref_err = _finish(reference)
    finally:
        for proc in (reference, victim):
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    seconds = time.monotonic() - started

    assert f"no training state at {ref_dir / STATE_FILE}; starting from epoch 1" in ref_err
    assert f"resumed from {cut_dir / STATE_FILE} after epoch {killed_after}" in res_err
    assert f"stop_reason: epochs - train.epochs = {epochs}" in ref_out
    assert f"resumed after epoch {killed_after}" in res_out
    for folder in (ref_dir, cut_dir):
        assert not (folder / STATE_FILE).exists()
        assert not list(folder.glob(".*.tmp"))

    ref_w = torch.load(ref_dir / "model.pt", weights_only=True)
    cut_w = torch.load(cut_dir / "model.pt", weights_only=True)
    diff = _max_diff(ref_w, cut_w)
    ref_m = json.loads((ref_dir / "metrics.json").read_text())
    cut_m = json.loads((cut_dir / "metrics.json").read_text())
    print(f"resume test: killed after epoch {killed_after}, {seconds:.1f} s, max |dw| {diff:g}")
    assert diff <= 1e-6  # in practice exactly 0.0
    training = ref_m["training"], cut_m["training"]
    assert _without_seconds(training[0]["history"]) == _without_seconds(training[1]["history"])
    assert [t["resumed_after_epoch"] for t in training] == [0, killed_after]
    assert ref_m["teacher"]["macro_f1"] == cut_m["teacher"]["macro_f1"]
    assert np.isfinite(training[1]["train_seconds"])
