"""Fleet-loop fixtures: a gateway feedback store filled through the gateway's own code, and the
runtime tests' deployment folders and broker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from runtime.config import config_from_dict
from runtime.feedback import Feedback
from runtime.parse import Readings
from runtime.stats import Stats
from tests.runtime.conftest import broker, deploy_dir, session_broker

__all__ = ["broker", "deploy_dir", "feedback_store", "session_broker"]

WINDOW = 20


def _store(state_dir: Path, data: Path, verdicts: dict[str, list[str]]) -> dict[str, list[str]]:
    """Replays runs of `data` into a gateway's Feedback, raises one alert per run at its 40th
    reading and gives it the next verdict of its run's class; returns class -> alert ids."""
    frame = pd.read_parquet(data)
    features = [c for c in frame.columns if c not in ("run_id", "ts", "label")]
    classes = ["normal", *sorted(set(frame["label"]) - {"normal"})]
    manifest = SimpleNamespace(window=WINDOW, features=features, classes=classes)
    cfg = config_from_dict(
        {"model_dir": str(state_dir), "state_dir": str(state_dir), "feedback": {"enabled": True}}
    )
    feedback = Feedback(cfg, Stats(), manifest)  # type: ignore[arg-type]
    raised: dict[str, list[str]] = {}
    for run_id, run in frame.groupby("run_id", sort=False):
        label = str(run["label"].iloc[-1])
        wanted = verdicts.get(label)
        if not wanted or len(raised.get(label, [])) == len(wanted):
            continue
        ts = run["ts"].to_numpy("float64")[:80]
        values = run[features].to_numpy("float32")[:80]
        device = f"pump-{run_id}"
        alert = {
            "event": "raised",
            "alert_id": str(uuid.uuid4()),
            "device_id": device,
            "class": label,
            "window_start_ts": float(ts[20]),
            "window_end_ts": float(ts[39]),
            "model_version": "1",
        }
        for i in range(0, 40):
            feedback.observe(device, Readings(ts[i : i + 1], values[i : i + 1]), 1)
        feedback.on_alert(alert)
        for i in range(40, 80):
            feedback.observe(device, Readings(ts[i : i + 1], values[i : i + 1]), 1)
        verdict = wanted[len(raised.get(label, []))]
        payload = json.dumps({"alert_id": alert["alert_id"], "verdict": verdict}).encode()
        assert feedback.on_message(device, payload, 1, 1)
        raised.setdefault(label, []).append(alert["alert_id"])
    acks: list[tuple[int, int]] = []
    feedback.drain(lambda mid, qos: acks.append((mid, qos)))
    assert len(acks) == sum(len(v) for v in verdicts.values())
    feedback.close()
    return raised


@pytest.fixture
def feedback_store(tiny_data: Path, tmp_path: Path):
    """feedback_store(verdicts) -> (state dir, class -> alert ids) for verdicts given per class
    (e.g. {"leak": ["confirmed", "rejected"]}), one alert per run of that class."""

    def make(verdicts: dict[str, list[str]]) -> tuple[Path, dict[str, list[str]]]:
        state = tmp_path / "state"
        return state, _store(state, tiny_data, verdicts)

    return make
