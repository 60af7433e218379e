"""The readings around each raised alert, kept on disk so confirmed alerts become training data.

In memory, per device, the readings the stream engine has queued and not stepped yet and the
`window + feedback.before` before them (whole messages, trimmed from the oldest; so bounded by
`batching.device_queue` as well), fed by the processing loop with the readings the engine
accepted. When
an alert is raised, the readings up to the end of its window (the W readings of the window
that raised it and `before` more; duplicates and out-of-order readings left out) are written
with the alert in one transaction; the next `after` readings of that device follow when they
have arrived (or, cut short, when the device is evicted, another alert is raised on it, the
model reloads or the gateway stops).

On disk (`feedback.sqlite3` in state_dir, shared with the verdicts, runtime/feedback.py): table
`alerts` (one row per raised alert) and `alert_readings` (alert, ts, the raw values as
little-endian float32). Bounded: at most `feedback.max_rows` readings and `feedback.max_alerts`
alerts; past either, whole alerts go oldest first (their verdicts stay, with their class, so
precision is unaffected). About max_rows x (4 x F + 30) bytes: 24 MiB at the default 200,000
rows of 24 features.

One thread (the processing loop) uses it, so no locks.
"""

from __future__ import annotations

import collections
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.config import FeedbackConfig
from runtime.parse import Readings

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "alert_id TEXT UNIQUE NOT NULL, device_id TEXT NOT NULL, class TEXT NOT NULL, "
    "normal_class TEXT NOT NULL, window_start_ts REAL NOT NULL, window_end_ts REAL NOT NULL, "
    "model_version TEXT NOT NULL, features TEXT NOT NULL, raised_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_readings (alert_seq INTEGER NOT NULL, ts REAL NOT NULL, "
    "vals BLOB NOT NULL, PRIMARY KEY (alert_seq, ts)) WITHOUT ROWID",
)
VALUE_DTYPE = np.dtype("<f4")


def increasing(ts: np.ndarray) -> np.ndarray:
    """Mask of the readings whose ts is above every earlier one (drops repeats and resets)."""
    before = np.maximum.accumulate(np.r_[-np.inf, ts[:-1]])
    return ts > before


@dataclass
class _Capture:
    """An alert still collecting the readings after its window."""

    seq: int
    after_ts: float  # readings newer than this belong to it
    remaining: int


@dataclass
class _History:
    chunks: collections.deque = field(default_factory=collections.deque)
    rows: int = 0


class AlertBuffer:
    """Recent readings per device in memory; the readings around raised alerts on disk."""

    def __init__(
        self, db: sqlite3.Connection, cfg: FeedbackConfig, window: int, features: list[str]
    ) -> None:
        self.db, self.cfg = db, cfg
        self.reconfigure(window, features)
        self.history: dict[str, _History] = {}
        self.captures: dict[str, _Capture] = {}
        self.rows = db.execute("SELECT COUNT(*) FROM alert_readings").fetchone()[0]
        self.alerts = db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        self.evicted = 0  # alerts removed by the bounds since start

    def reconfigure(self, window: int, features: list[str]) -> None:
        """A (re)loaded model: its window length and feature list."""
        self.keep = window + self.cfg.before  # readings stored up to a window's end
        self.features = json.dumps(features)

    def observe(self, device_id: str, readings: Readings, queued: int) -> None:
        """Remembers a device's readings (`queued` of its readings, these included, are not
        stepped yet); completes its pending capture when it can."""
        hist = self.history.get(device_id)
        if hist is None:
            hist = self.history[device_id] = _History()
        hist.chunks.append(readings)
        hist.rows += len(readings)
        while hist.rows - len(hist.chunks[0]) >= self.keep + queued:
            hist.rows -= len(hist.chunks.popleft())
        capture = self.captures.get(device_id)
        if capture is not None:
            self._extend(device_id, capture, readings.ts, readings.values)

    def record(self, alert: dict[str, Any], normal_class: str) -> None:
        """Stores a raised alert (its outbox body) with the readings up to its window's end."""
        device_id = alert["device_id"]
        self.finish(device_id)
        ts, values = self._recent(device_id)
        end = float(alert["window_end_ts"])
        upto = ts <= end
        with self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, device_id, class, normal_class, "
                "window_start_ts, window_end_ts, model_version, features, raised_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert["alert_id"],
                    device_id,
                    alert["class"],
                    normal_class,
                    float(alert["window_start_ts"]),
                    end,
                    str(alert["model_version"]),
                    self.features,
                    time.time(),
                ),
            )
            if cursor.rowcount != 1:  # the same alert again (a restart re-raised it)
                return
            seq = cursor.lastrowid
            self._insert(seq, ts[upto][-self.keep :], values[upto][-self.keep :])
        self.alerts += 1
        if self.cfg.after:
            capture = self.captures[device_id] = _Capture(seq, end, self.cfg.after)
            self._extend(device_id, capture, ts[~upto], values[~upto])
        self._bound()

    def finish(self, device_id: str) -> None:
        """Ends a device's pending capture with what it has."""
        self.captures.pop(device_id, None)

    def forget(self, device_id: str) -> None:
        """An evicted device: its history and pending capture go."""
        self.history.pop(device_id, None)
        self.finish(device_id)

    def clear(self) -> None:
        """A reload: history in the old feature order is no use any more."""
        self.history.clear()
        self.captures.clear()

    def _recent(self, device_id: str) -> tuple[np.ndarray, np.ndarray]:
        hist = self.history.get(device_id)
        if hist is None or not hist.chunks:
            return np.zeros(0), np.zeros((0, 0), np.float32)
        ts = np.concatenate([c.ts for c in hist.chunks])
        values = np.concatenate([c.values for c in hist.chunks])
        keep = increasing(ts)
        return ts[keep], values[keep]

    def _extend(
        self, device_id: str, capture: _Capture, ts: np.ndarray, values: np.ndarray
    ) -> None:
        newer = ts > capture.after_ts
        if not newer.any():
            return
        ts, values = ts[newer], values[newer]
        keep = increasing(ts)
        ts, values = ts[keep][: capture.remaining], values[keep][: capture.remaining]
        with self.db:
            self._insert(capture.seq, ts, values)
        capture.remaining -= len(ts)
        capture.after_ts = float(ts[-1])
        if capture.remaining <= 0:
            self.finish(device_id)
        self._bound()

    def _insert(self, seq: int, ts: np.ndarray, values: np.ndarray) -> None:
        rows = [
            (seq, float(t), np.ascontiguousarray(v, VALUE_DTYPE).tobytes())
            for t, v in zip(ts, values, strict=True)
        ]
        added = self.db.executemany(
            "INSERT OR IGNORE INTO alert_readings (alert_seq, ts, vals) VALUES (?, ?, ?)", rows
        ).rowcount
        self.rows += max(added, 0)

    def _bound(self) -> None:
        """Removes the oldest alerts, readings included, past max_rows or max_alerts."""
        while (self.rows > self.cfg.max_rows or self.alerts > self.cfg.max_alerts) and self.alerts:
            with self.db:
                (seq,) = self.db.execute("SELECT MIN(seq) FROM alerts").fetchone()
                gone = self.db.execute(
                    "DELETE FROM alert_readings WHERE alert_seq = ?", (seq,)
                ).rowcount
                self.db.execute("DELETE FROM alerts WHERE seq = ?", (seq,))
            self.rows -= gone
            self.alerts -= 1
            self.evicted += 1
            for device_id, capture in list(self.captures.items()):
                if capture.seq == seq:
                    self.finish(device_id)
