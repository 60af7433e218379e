"""The alert outbox: SQLite (WAL) rows that live until the broker acknowledges them (PUBACK).

paho-mqtt keeps unacknowledged QoS 1 messages only in memory, so an alert in flight when the
process dies would vanish. Every alert is written here first; `pump` hands at most
`max_inflight` rows to the client at a time (MQTT message ids wrap at 65,535), `acked` deletes a
row once its PUBACK arrives, and a restarted process re-sends whatever is left (at-least-once).

One thread owns an Outbox (the processing loop); paho's callbacks only queue message ids.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"


class Outbox:
    """A bounded on-disk queue of (topic, payload) with a counted overflow policy."""

    def __init__(
        self,
        state_dir: Path,
        max_rows: int,
        overflow: str,
        max_inflight: int,
        count: Callable[[str, int], None],
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / OUTBOX_FILE
        # built on the main thread, then used only by the processing loop's thread
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)"
        )
        self.max_rows = max_rows
        self.overflow = overflow
        self.max_inflight = max_inflight
        self.count = count
        self.inflight: dict[int, int] = {}  # paho mid -> row id
        self.sent_at: dict[int, float] = {}  # paho mid -> monotonic time handed to paho
        self.rows = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        if self.rows:
            log.info("outbox %s holds %d unacknowledged alerts; re-sending", self.path, self.rows)

    def add(self, topic: str, payload: bytes) -> bool:
        """Stores an alert; False when the overflow policy dropped it (counted)."""
        if self.rows >= self.max_rows:
            if self.overflow == "drop_new":
                self.count("outbox_dropped", 1)
                return False
            handed = {row: mid for mid, row in self.inflight.items()}
            oldest = self.db.execute(
                "SELECT id FROM outbox ORDER BY id LIMIT ?", (len(handed) + 1,)
            ).fetchall()
            victim = next((r[0] for r in oldest if r[0] not in handed), oldest[0][0])
            if victim in handed:  # every row is in flight: forget the oldest one's PUBACK
                self.inflight.pop(handed[victim])
                self.sent_at.pop(handed[victim])
            self._delete(victim)
            self.count("outbox_dropped", 1)
        self.db.execute(
            "INSERT INTO outbox (topic, payload, created) VALUES (?, ?, ?)",
            (topic, payload, time.time()),
        )
        self.rows += 1
        return True

    def pump(self, publish: Callable[[str, bytes], int | None]) -> int:
        """Hands unsent rows to `publish` (returns the message id, or None when refused)."""
        room = self.max_inflight - len(self.inflight)
        if room <= 0 or self.rows == len(self.inflight):
            return 0
        handed = set(self.inflight.values())
        rows = [
            r
            for r in self.db.execute(
                "SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?",
                (room + len(handed),),
            ).fetchall()
            if r[0] not in handed
        ][:room]
        sent = 0
        now = time.monotonic()
        for row_id, topic, payload in rows:
            mid = publish(topic, payload)
            if mid is None:
                break
            self.inflight[mid] = row_id
            self.sent_at[mid] = now
            sent += 1
        return sent

    def acked(self, mid: int) -> float | None:
        """Deletes the row of an acknowledged message; returns seconds since it was handed over."""
        row_id = self.inflight.pop(mid, None)
        if row_id is None:
            return None
        self._delete(row_id)
        return time.monotonic() - self.sent_at.pop(mid)

    def _delete(self, row_id: int) -> None:
        self.rows -= self.db.execute("DELETE FROM outbox WHERE id = ?", (row_id,)).rowcount

    def forget_inflight(self) -> None:
        """After the client is recreated, everything unacknowledged must be handed over again."""
        self.inflight.clear()
        self.sent_at.clear()

    @property
    def unacked(self) -> int:
        return self.rows

    def close(self) -> None:
        self.db.close()
