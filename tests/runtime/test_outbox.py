"""The SQLite outbox: rows live until acked, survive a reopen, and overflow is counted."""

from __future__ import annotations

import collections
from pathlib import Path

from runtime.outbox import Outbox


class FakeCounter(collections.Counter):
    def __call__(self, name: str, n: int) -> None:
        self[name] += n


def open_box(path: Path, counts, max_rows: int = 100, overflow: str = "drop_oldest", inflight=3):
    return Outbox(path, max_rows, overflow, inflight, counts)


def test_rows_survive_until_acked_and_are_resent_after_reopen(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts)
    for i in range(5):
        box.add("t", f"alert {i}".encode())
    sent: list[tuple[int, bytes]] = []
    next_mid = iter(range(1, 100))

    def publish(topic: str, payload: bytes) -> int:
        mid = next(next_mid)
        sent.append((mid, payload))
        return mid

    assert box.pump(publish) == 3  # bounded by max_inflight
    assert box.pump(publish) == 0
    assert box.acked(sent[0][0]) is not None
    assert box.acked(999) is None  # a window message's mid, not ours
    assert box.pump(publish) == 1
    assert [p for _, p in sent] == [f"alert {i}".encode() for i in range(4)]
    box.close()

    reopened = open_box(tmp_path, counts)  # a restart: everything unacked is pending again
    again: list[bytes] = []
    reopened.pump(lambda t, p: again.append(p) or len(again))
    assert again == [f"alert {i}".encode() for i in (1, 2, 3)]
    assert reopened.unacked == 4


def test_overflow_policies_are_counted(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path / "old", counts, max_rows=2)
    for i in range(4):
        assert box.add("t", bytes([i]))
    kept: list[bytes] = []
    box.pump(lambda t, p: kept.append(p) or len(kept))
    assert kept == [bytes([2]), bytes([3])] and counts["outbox_dropped"] == 2

    counts = FakeCounter()
    box = open_box(tmp_path / "new", counts, max_rows=2, overflow="drop_new")
    assert [box.add("t", bytes([i])) for i in range(3)] == [True, True, False]
    assert counts["outbox_dropped"] == 1 and box.unacked == 2


def test_refused_publish_stays_pending(tmp_path: Path) -> None:
    box = open_box(tmp_path, FakeCounter())
    box.add("t", b"x")
    assert box.pump(lambda t, p: None) == 0
    assert box.pump(lambda t, p: 7) == 1
    assert box.acked(7) is not None and box.unacked == 0


def test_overflow_with_everything_in_flight_keeps_the_count_right(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, max_rows=2, inflight=5)
    box.add("t", b"a")
    box.add("t", b"b")
    assert box.pump(lambda t, p: {b"a": 1, b"b": 2}[p]) == 2
    box.add("t", b"c")  # drops "a", which was in flight
    assert box.acked(1) is None  # its late PUBACK changes nothing
    assert box.acked(2) is not None
    assert box.unacked == 1 and counts["outbox_dropped"] == 1
