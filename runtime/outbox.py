"""The alert outbox: SQLite (WAL) rows that live until the broker acknowledges them (PUBACK).

paho-mqtt keeps unacknowledged QoS 1 messages only in memory, so an alert in flight when the
process dies would vanish. Every alert is written here first, in the same transaction as the
debouncer state that produced it (`alert_state`), so a kill -9 can never keep one without the
other. The processing loop writes a round's alerts in one transaction (`batch`): one commit per
round, and still every alert committed before it is published or its readings acked.
`pump` hands at most `max_inflight` rows to the client at a time, `settle` deletes a row
once its handle reports the PUBACK, and a restarted process re-sends whatever is left
(at-least-once). A row the client can never publish moves to `dead_letter` instead of
blocking the rows behind it.

Durability (`outbox.synchronous`): with "normal" (WAL, synchronous=NORMAL) a committed alert
survives the process being killed but may be lost on a power loss or kernel crash (the last
transactions are in the WAL, not yet fsynced); with "full" (synchronous=FULL) every commit is
fsynced, so it survives a power loss too, at a few ms per alert on an SD card.

One thread owns an Outbox (the processing loop), so no locks.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtime.config import OutboxConfig

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
LOGGED_TOPIC_CHARS = 80

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_state (device_id TEXT PRIMARY KEY, "
    "active INTEGER NOT NULL, updated REAL)",
    "CREATE TABLE IF NOT EXISTS dead_letter (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
    "payload BLOB NOT NULL, created REAL NOT NULL, reason TEXT NOT NULL)",
)


class Handle(Protocol):
    """What publish returns for a queued message (paho's MQTTMessageInfo)."""

    def is_published(self) -> bool: ...


@dataclass
class _Flight:
    handle: Handle
    handed: float  # monotonic time handed to publish: the wait settle reports
    since: float  # start of the resend clock, restarted when the link comes back


def _published(handle: Handle) -> bool:
    """is_published(), False where paho cannot tell.

    paho raises RuntimeError for a message queued while disconnected (rc NO_CONN stays on its
    info even after the PUBACK) and ValueError for one it never queued; such a row waits for
    the resend instead.
    """
    try:
        return handle.is_published()
    except (RuntimeError, ValueError):
        return False


def _short(topic: str) -> str:
    if len(topic) <= LOGGED_TOPIC_CHARS:
        return topic
    return f"{topic[:LOGGED_TOPIC_CHARS]}... ({len(topic)} chars)"


class Outbox:
    """A bounded on-disk queue of (topic, payload) with a counted overflow policy."""

    def __init__(
        self, state_dir: Path, cfg: OutboxConfig, count: Callable[[str, int], None]
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / OUTBOX_FILE
        self.cfg = cfg
        self.count = count
        # built on the main thread, then used only by the processing loop's thread
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if cfg.synchronous == 'full' else 'NORMAL'}")
        for statement in SCHEMA:  # IF NOT EXISTS: a file from before alert_state opens as is
            self.db.execute(statement)
        self.inflight: dict[int, _Flight] = {}  # row id -> its handle
        self._was_connected = False
        self._batching = False  # inside batch(): add() joins one transaction
        self._recount()
        if self._rows:
            log.info("outbox %s holds %d unacknowledged alerts; re-sending", self.path, self._rows)
        if self._dead:
            log.warning("outbox %s holds %d dead-lettered alerts", self.path, self._dead)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        if self._batching:  # inside batch(): joins its transaction, which batch() commits
            if not self.db.in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for every `add` inside (a processing round's alerts), committed when
        the block ends: one commit per round instead of one per alert.

        The guarantee stays: the loop publishes (`pump`) and acks AMQP readings only after the
        block, so every alert is committed before it goes out and before the readings that
        produced it are acked; a kill inside the block loses the round's alerts together with
        its readings' acks (the broker re-delivers those). `pump` inside a batch is refused.
        On an exception the round's rows are rolled back and the exception goes on.
        """
        if self._batching:  # nested: the outer block commits
            yield
            return
        self._batching = True
        try:
            yield
            if self.db.in_transaction:
                self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
                self._recount()
            raise
        finally:
            self._batching = False

    def _recount(self) -> None:
        """Row counts from the file again (after a rolled-back batch)."""
        self._rows = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._dead = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        self.inflight = {
            row_id: flight
            for row_id, flight in self.inflight.items()
            if self.db.execute("SELECT 1 FROM outbox WHERE id = ?", (row_id,)).fetchone()
        }

    def add(self, topic: str, payload: bytes, device_id: str, active: int) -> bool:
        """Stores an alert and the device's alert state after it (0 = none) in one transaction.

        False when the overflow policy dropped the alert (counted); the state is recorded anyway,
        so a restart restores what the debouncer believes.
        """
        full = self._rows >= self.cfg.max_rows
        keep = not full or self.cfg.overflow != "drop_new"
        victims = self._victims() if full and keep else []
        now = time.time()
        with self._tx():
            if victims:
                self.db.executemany("DELETE FROM outbox WHERE id = ?", [(v,) for v in victims])
            if keep:
                self.db.execute(
                    "INSERT INTO outbox (topic, payload, created) VALUES (?, ?, ?)",
                    (topic, payload, now),
                )
            if active:
                self.db.execute(
                    "INSERT OR REPLACE INTO alert_state (device_id, active, updated) "
                    "VALUES (?, ?, ?)",
                    (device_id, active, now),
                )
            else:
                self.db.execute("DELETE FROM alert_state WHERE device_id = ?", (device_id,))
        for victim in victims:  # a dropped row's late PUBACK must change nothing
            self.inflight.pop(victim, None)
        self._rows += int(keep) - len(victims)
        dropped = len(victims) + int(not keep)
        if dropped:
            self.count("outbox_dropped", dropped)
        return keep

    def _victims(self) -> list[int]:
        """The rows drop_oldest removes to make room: the oldest not in flight, else in flight."""
        excess = self._rows - self.cfg.max_rows + 1
        oldest = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM outbox ORDER BY id LIMIT ?", (len(self.inflight) + excess,)
            )
        ]
        victims = [r for r in oldest if r not in self.inflight][:excess]
        return victims + [r for r in oldest if r in self.inflight][: excess - len(victims)]

    def alert_state(self) -> dict[str, int]:
        """device_id -> the fault index raised, as of the last committed alert (for restore)."""
        return dict(self.db.execute("SELECT device_id, active FROM alert_state"))

    def clear_alert_state(self) -> None:
        """Forgets every device's state (a reload changed the class list, so indices moved)."""
        self.db.execute("DELETE FROM alert_state")

    def pump(self, publish: Callable[[str, bytes], Handle | None]) -> int:
        """Hands unsent rows, oldest first, to `publish`; returns how many it took.

        publish returns None to refuse for now (this pump stops) and raises ValueError for a
        message that can never be published (that row is dead-lettered, the next one goes on).
        Refused inside `batch()`: a row handed out there would go out before its commit.
        """
        if self._batching:
            raise RuntimeError("Outbox.pump inside batch(): alerts would go out uncommitted")
        room = self.cfg.max_inflight - len(self.inflight)
        after = 0
        sent = 0
        while room > 0 and self._rows > len(self.inflight):
            batch = self.db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after, room + len(self.inflight)),
            ).fetchall()
            if not batch:
                break
            for row_id, topic, payload in batch:
                after = row_id
                if row_id in self.inflight:
                    continue
                try:
                    handle = publish(topic, payload)
                except ValueError as exc:
                    self._dead_letter(row_id, topic, str(exc))
                    continue
                if handle is None:
                    return sent
                now = time.monotonic()
                self.inflight[row_id] = _Flight(handle, now, now)
                sent += 1
                room -= 1
                if room == 0:
                    break
        return sent

    def _dead_letter(self, row_id: int, topic: str, reason: str) -> None:
        with self._tx():
            self.db.execute(
                "INSERT OR REPLACE INTO dead_letter (id, topic, payload, created, reason) "
                "SELECT id, topic, payload, created, ? FROM outbox WHERE id = ?",
                (reason, row_id),
            )
            self.db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            trim = self._dead + 1 - self.cfg.max_rows  # bounded like the outbox itself
            if trim > 0:
                self.db.execute(
                    "DELETE FROM dead_letter WHERE id IN "
                    "(SELECT id FROM dead_letter ORDER BY id LIMIT ?)",
                    (trim,),
                )
        self._rows -= 1
        self._dead += 1 - max(trim, 0)
        self.count("outbox_dead_letter", 1)
        if trim > 0:
            self.count("outbox_dead_letter_dropped", trim)
        log.error(
            "alert to %s can never be published (%s); moved to dead_letter", _short(topic), reason
        )

    def settle(self, connected: bool) -> list[float]:
        """Deletes the rows whose PUBACK arrived; returns the seconds each waited.

        Matched by handle, never by message id: QoS 0 publishes share paho's mid counter, so a
        mid can come round again while an alert still waits. While `connected`, a row in flight
        longer than resend_after_s is forgotten so the next pump re-sends it (same payload, same
        alert id); the clock restarts when the link comes back, so paho's own re-send after a
        reconnect gets its chance first. Call it every round with the link's state.
        """
        now = time.monotonic()
        if connected and not self._was_connected:
            for flight in self.inflight.values():
                flight.since = now
        self._was_connected = connected
        done: list[int] = []
        waits: list[float] = []
        resent = 0
        for row_id, flight in list(self.inflight.items()):
            if _published(flight.handle):
                done.append(row_id)
                waits.append(now - flight.handed)
                del self.inflight[row_id]
            elif connected and now - flight.since > self.cfg.resend_after_s:
                del self.inflight[row_id]
                resent += 1
        if done:
            with self._tx():
                deleted = self.db.executemany(
                    "DELETE FROM outbox WHERE id = ?", [(r,) for r in done]
                ).rowcount
            self._rows -= deleted
        if resent:
            self.count("outbox_resent", resent)
        return waits

    @property
    def unacked(self) -> int:
        """Rows not yet acknowledged (in flight or waiting to be handed over)."""
        return self._rows

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def dead_letters(self) -> int:
        return self._dead

    def close(self) -> None:
        self.inflight.clear()
        self.db.close()
