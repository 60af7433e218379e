"""Operator feedback: verdicts on raised alerts, stored with them, and precision per class.

Topic `topics.feedback` (`edgelstm/{gateway_id}/feedback/+`, the `+` level is the device id),
QoS 1. Payload: one JSON object, at most `feedback.max_payload_bytes` bytes, with exactly

    alert_id  str, required: the `alert_id` of a `raised` alert (a UUID, canonical form)
    verdict   str, required: "confirmed" (the fault was real) or "rejected" (a false alarm)
    by        str, optional: who decided (at most 128 characters)
    note      str, optional: free text (at most 1024 characters)

Anything else (other keys, other types, longer strings) is counted and dropped, never raised:
`feedback_invalid_<reason>` as for readings (runtime/parse.py). paho's network thread only
parses (`on_message`) and appends to a bounded deque; the processing loop stores what it holds
in one transaction per loop pass (`drain`) and only then acknowledges the messages (the client
runs with manual acks while feedback is on), so a verdict the broker saw acknowledged is on disk.
A dropped message is acknowledged at once. The latest verdict on an alert wins.

A verdict whose alert is not in the store (raised before feedback was enabled, removed by the
buffer's bounds, or lost in a crash between the outbox and this store) is counted
(`feedback_unknown_alert`) and kept with no class; when that alert is recorded later its class
is filled in. A verdict naming a known alert of another device is dropped
(`feedback_invalid_device_mismatch`).

Precision per class over the last day and week (by the time a verdict arrived):
confirmed / (confirmed + rejected), with both counts; on the stats topic (`feedback`) and as
Prometheus gauges. Verdicts are bounded to `feedback.max_alerts` rows, oldest dropped first.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.alert_buffer import SCHEMA as BUFFER_SCHEMA
from runtime.alert_buffer import AlertBuffer
from runtime.config import GatewayConfig
from runtime.manifest import Manifest
from runtime.parse import Readings
from runtime.ratelimit import RateLimitedLog
from runtime.stats import Stats

log = logging.getLogger(__name__)

DB_FILE = "feedback.sqlite3"
VERDICTS = ("confirmed", "rejected")
REQUIRED_KEYS = frozenset({"alert_id", "verdict"})
OPTIONAL_KEYS = {"by": 128, "note": 1024}  # key -> longest accepted string
WINDOWS_S = {"1d": 86_400.0, "7d": 7 * 86_400.0}
Ack = Callable[[int, int], object]  # MqttLink.ack(mid, qos)
UNKNOWN_CLASS = "unknown"  # label of verdicts on alerts this gateway does not hold

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS verdicts (alert_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, "
    "class TEXT, verdict TEXT NOT NULL, by TEXT, note TEXT, received_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS verdicts_received ON verdicts (received_at)",
)


class FeedbackReason(str, enum.Enum):
    """Why a feedback message was dropped; each is a counter in the stats."""

    NOT_JSON = "not_json"
    BAD_SCHEMA = "bad_schema"  # not an object, missing/unknown keys, wrong types or lengths
    OVERSIZED = "oversized"
    BAD_DEVICE_ID = "bad_device_id"
    DEVICE_MISMATCH = "device_mismatch"  # the alert belongs to another device
    QUEUE_FULL = "queue_full"

    @property
    def counter(self) -> str:
        prefix = "dropped" if self is FeedbackReason.QUEUE_FULL else "invalid"
        return f"feedback_{prefix}_{self.value}"


@dataclass(frozen=True)
class Verdict:
    """One validated feedback message."""

    alert_id: str
    verdict: str
    by: str | None = None
    note: str | None = None


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def parse_verdict(payload: bytes, max_bytes: int) -> Verdict | FeedbackReason:
    """A payload as a Verdict, or the reason it is not one (never raises)."""
    if len(payload) > max_bytes:
        return FeedbackReason.OVERSIZED
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):
        return FeedbackReason.NOT_JSON
    if not isinstance(msg, dict) or not REQUIRED_KEYS <= msg.keys() <= REQUIRED_KEYS | set(
        OPTIONAL_KEYS
    ):
        return FeedbackReason.BAD_SCHEMA
    alert, verdict = msg["alert_id"], msg["verdict"]
    if not (isinstance(alert, str) and _is_uuid(alert) and verdict in VERDICTS):
        return FeedbackReason.BAD_SCHEMA
    for key, longest in OPTIONAL_KEYS.items():
        value = msg.get(key)
        if value is not None and not (isinstance(value, str) and len(value) <= longest):
            return FeedbackReason.BAD_SCHEMA
    return Verdict(alert, verdict, msg.get("by"), msg.get("note"))


def open_db(path: Path, synchronous: str = "normal") -> sqlite3.Connection:
    """The feedback store (WAL), created if missing. `with db:` is one transaction."""
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    for statement in (*BUFFER_SCHEMA, *SCHEMA):
        db.execute(statement)
    return db


def open_readonly(path: Path) -> sqlite3.Connection:
    """A store another process (the gateway) may be writing, for reading only."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def precision(db: sqlite3.Connection, now: float) -> dict[str, dict[str, dict[str, Any]]]:
    """window -> class -> {confirmed, rejected, precision}; precision is None without verdicts
    (classes without any verdict in a window are absent)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for window, span in WINDOWS_S.items():
        table: dict[str, dict[str, Any]] = {}
        for cls, verdict, n in db.execute(
            "SELECT class, verdict, COUNT(*) FROM verdicts WHERE received_at >= ? "
            "AND class IS NOT NULL GROUP BY class, verdict",
            (now - span,),
        ):
            table.setdefault(cls, {"confirmed": 0, "rejected": 0})[verdict] = n
        for row in table.values():
            row["precision"] = round(row["confirmed"] / (row["confirmed"] + row["rejected"]), 6)
        out[window] = table
    return out


class Feedback:
    """The gateway side: verdicts in from MQTT, the alert buffer, precision out."""

    def __init__(self, cfg: GatewayConfig, stats: Stats, manifest: Manifest) -> None:
        self.cfg, self.stats = cfg, stats
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_db(cfg.state_dir / DB_FILE, cfg.outbox.synchronous)
        self.buffer = AlertBuffer(self.db, cfg.feedback, manifest.window, manifest.features)
        self.normal_class = manifest.classes[0]
        self.inbox: collections.deque = collections.deque()
        self.totals: collections.Counter[tuple[str, str]] = collections.Counter()
        self.bad_log = RateLimitedLog(log, cfg.log_every_s)

    # ---- network thread -----------------------------------------------------------------

    def on_message(self, device_id: str, payload: bytes, mid: int, qos: int) -> bool:
        """Parses and queues one message; False when it was dropped (ack it at once)."""
        self.stats.count("feedback_messages")
        parsed: Verdict | FeedbackReason
        if not 0 < len(device_id.encode()) <= self.cfg.limits.max_device_id_bytes:
            parsed = FeedbackReason.BAD_DEVICE_ID
        elif len(self.inbox) >= self.cfg.feedback.queue_size:
            parsed = FeedbackReason.QUEUE_FULL
        else:
            parsed = parse_verdict(payload, self.cfg.feedback.max_payload_bytes)
        if isinstance(parsed, FeedbackReason):
            self._drop(parsed, device_id)
            return False
        self.inbox.append((device_id, parsed, time.time(), mid, qos))
        return True

    def _drop(self, reason: FeedbackReason, device_id: str) -> None:
        self.stats.count(reason.counter)
        self.bad_log.warning(
            reason.counter, "dropped a feedback message for %.80r: %s", device_id, reason.value
        )

    # ---- processing loop ----------------------------------------------------------------

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """A failing store (disk full, a broken file) is logged and counted
        (`feedback_store_errors`), never the end of serving: alerts do not depend on it."""
        try:
            yield
        except sqlite3.Error as exc:
            self.stats.count("feedback_store_errors")
            self.bad_log.warning(
                "store", "the feedback store failed %s (%s); serving goes on", what, exc
            )

    def drain(self, ack: Ack) -> int:
        """Stores every queued verdict in one transaction, then acknowledges them (`ack(mid,
        qos)`); returns how many were stored. When the store fails nothing is acknowledged, so
        the broker hands the messages over again in the next session."""
        items = []
        while self.inbox:
            items.append(self.inbox.popleft())
        if not items:
            return 0
        stored: list[tuple[str, str]] = []
        with self._guard("storing verdicts"):
            stored = self._store(items)
            for _device_id, _verdict, _received, mid, qos in items:
                ack(mid, qos)
            for key in stored:
                self.totals[key] += 1
        return len(stored)

    def _store(self, items: list) -> list[tuple[str, str]]:
        """One transaction of verdicts; returns (class, verdict) of those stored."""
        stored = []
        with self.db:
            for device_id, verdict, received, _mid, _qos in items:
                cls = self._class_of(device_id, verdict.alert_id)
                if cls is FeedbackReason.DEVICE_MISMATCH:
                    self._drop(FeedbackReason.DEVICE_MISMATCH, device_id)
                    continue
                self.db.execute(
                    "INSERT OR REPLACE INTO verdicts (alert_id, device_id, class, verdict, by, "
                    "note, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        verdict.alert_id,
                        device_id,
                        cls,
                        verdict.verdict,
                        verdict.by,
                        verdict.note,
                        received,
                    ),
                )
                stored.append((cls or UNKNOWN_CLASS, verdict.verdict))
            self._bound()
        return stored

    def _class_of(self, device_id: str, alert_id: str) -> str | FeedbackReason | None:
        """The alert's class; None (counted) for an unknown alert; DEVICE_MISMATCH."""
        row = self.db.execute(
            "SELECT device_id, class FROM alerts WHERE alert_id = ? UNION ALL "
            "SELECT device_id, class FROM verdicts WHERE alert_id = ? AND class IS NOT NULL",
            (alert_id, alert_id),
        ).fetchone()
        if row is None:
            self.stats.count("feedback_unknown_alert")
            return None
        return FeedbackReason.DEVICE_MISMATCH if row[0] != device_id else row[1]

    def _bound(self) -> None:
        excess = (
            self.db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
            - self.cfg.feedback.max_alerts
        )
        if excess > 0:
            self.db.execute(
                "DELETE FROM verdicts WHERE alert_id IN "
                "(SELECT alert_id FROM verdicts ORDER BY received_at LIMIT ?)",
                (excess,),
            )

    def observe(self, device_id: str, readings: Readings, queued: int) -> None:
        with self._guard("storing readings after an alert"):
            self.buffer.observe(device_id, readings, queued)

    def on_alert(self, alert: dict[str, Any]) -> None:
        """A raised alert (its outbox body): recorded, with the readings around it."""
        if alert["event"] != "raised":
            return
        with self._guard("recording an alert"):
            self.buffer.record(alert, self.normal_class)
            with self.db:  # verdicts that came before their alert (see the module docstring)
                self.db.execute(
                    "UPDATE verdicts SET class = ? WHERE alert_id = ? AND class IS NULL "
                    "AND device_id = ?",
                    (alert["class"], alert["alert_id"], alert["device_id"]),
                )

    def forget(self, device_id: str) -> None:
        self.buffer.forget(device_id)

    def reload(self, manifest: Manifest) -> None:
        self.buffer.clear()
        self.buffer.reconfigure(manifest.window, manifest.features)
        self.normal_class = manifest.classes[0]

    def refresh(self) -> dict[str, Any]:
        """Sets the feedback gauges and Prometheus families; returns the stats' `feedback`."""
        summary: dict[str, Any] = {"error": "the feedback store failed (feedback_store_errors)"}
        with self._guard("reading precision"):
            summary = self._summary()
        return summary

    def _summary(self) -> dict[str, Any]:
        table = precision(self.db, time.time())
        unknown = self.db.execute("SELECT COUNT(*) FROM verdicts WHERE class IS NULL").fetchone()
        self.stats.gauge("feedback_buffer_alerts", self.buffer.alerts)
        self.stats.gauge("feedback_buffer_rows", self.buffer.rows)
        self.stats.labelled_gauge(
            "feedback_precision",
            "confirmed / (confirmed + rejected) alerts per class over a rolling window",
            ("class", "window"),
            [
                ((cls, window), row["precision"])
                for window, rows in table.items()
                for cls, row in rows.items()
            ],
        )
        self.stats.labelled_gauge(
            "feedback_window_verdicts",
            "verdicts per class of their alert over a rolling window",
            ("class", "window", "verdict"),
            [
                ((cls, window, verdict), row[verdict])
                for window, rows in table.items()
                for cls, row in rows.items()
                for verdict in VERDICTS
            ],
        )
        self.stats.labelled_counter(
            "feedback_verdicts",
            "verdicts stored since start, per class of their alert ('unknown': not held here)",
            ("class", "verdict"),
            [((c, v), n) for (c, v), n in sorted(self.totals.items())],
        )
        totals: dict[str, dict[str, int]] = {}
        for (cls, verdict), n in sorted(self.totals.items()):
            totals.setdefault(cls, {})[verdict] = n
        return {
            "precision": table,
            "verdicts_since_start": totals,
            "unknown_alert_verdicts": unknown[0],
            "buffer": {
                "alerts": self.buffer.alerts,
                "rows": self.buffer.rows,
                "evicted_alerts": self.buffer.evicted,
            },
        }

    def close(self) -> None:
        self.db.close()
