"""The SQLite outbox: rows live until their handle reports the PUBACK, survive a reopen, the
alert state commits with them, and unpublishable rows are dead-lettered instead of blocking."""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from runtime.config import OutboxConfig
from runtime.outbox import OUTBOX_FILE, Outbox


class FakeCounter(collections.Counter):
    def __call__(self, name: str, n: int) -> None:
        self[name] += n


class FakeHandle:
    """paho's MQTTMessageInfo as far as the outbox looks at it."""

    def __init__(self) -> None:
        self.published = False

    def is_published(self) -> bool:
        return self.published


class Recorder:
    """A publish callable that keeps every (payload, handle) it handed out."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, FakeHandle]] = []

    def __call__(self, topic: str, payload: bytes) -> FakeHandle:
        handle = FakeHandle()
        self.sent.append((payload, handle))
        return handle

    @property
    def payloads(self) -> list[bytes]:
        return [p for p, _ in self.sent]

    def ack(self, payload: bytes) -> None:
        for p, handle in self.sent:
            if p == payload:
                handle.published = True


def open_box(path: Path, counts=None, **cfg) -> Outbox:
    cfg.setdefault("max_inflight", 3)
    return Outbox(path, OutboxConfig(**cfg), counts if counts is not None else FakeCounter())


def fill(box: Outbox, n: int, topic: str = "t") -> None:
    for i in range(n):
        assert box.add(topic, f"alert {i}".encode(), "dev", 0)


def alerts(*indices: int) -> list[bytes]:
    return [f"alert {i}".encode() for i in indices]


def test_unacked_rows_survive_a_reopen_and_are_resent(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    fill(box, 4)
    pub = Recorder()
    box.pump(pub)
    pub.ack(b"alert 0")
    assert len(box.settle(connected=True)) == 1
    box.close()

    reopened = open_box(tmp_path)  # a restart: everything unacknowledged is pending again
    again = Recorder()
    assert reopened.pump(again) == 3
    assert again.payloads == alerts(1, 2, 3)
    assert reopened.unacked == reopened.rows == 3


def test_rows_handed_out_are_capped_at_max_inflight(tmp_path: Path) -> None:
    box = open_box(tmp_path, max_inflight=3)
    fill(box, 5)
    pub = Recorder()
    assert box.pump(pub) == 3
    assert box.pump(pub) == 0  # nothing acknowledged yet: no room
    pub.ack(b"alert 1")
    box.settle(connected=True)
    assert box.pump(pub) == 1
    assert pub.payloads == alerts(0, 1, 2, 3)


def test_refused_publish_stops_the_pump_and_stays_pending(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    fill(box, 2)
    calls: list[bytes] = []
    assert box.pump(lambda t, p: calls.append(p)) == 0
    assert calls == alerts(0)  # stopped at the first refusal
    pub = Recorder()
    assert box.pump(pub) == 2 and pub.payloads == alerts(0, 1)


def test_settle_deletes_only_published_handles_and_reports_waits(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    fill(box, 3)
    pub = Recorder()
    box.pump(pub)
    assert box.settle(connected=True) == []
    pub.ack(b"alert 1")
    waits = box.settle(connected=True)
    assert len(waits) == 1 and 0 <= waits[0] < 5
    assert box.unacked == 2
    assert box.settle(connected=True) == []  # a handle settles once
    box.close()
    again = Recorder()
    open_box(tmp_path).pump(again)
    assert again.payloads == alerts(0, 2)


def test_a_handle_paho_cannot_answer_for_stays_in_flight(tmp_path: Path) -> None:
    class NoConnHandle:  # paho: queued while disconnected, is_published() raises from then on
        def is_published(self) -> bool:
            raise RuntimeError("Message publish failed: The client is not currently connected.")

    box = open_box(tmp_path)
    fill(box, 1)
    box.pump(lambda t, p: NoConnHandle())
    assert box.settle(connected=True) == [] and box.unacked == 1


def test_unpublishable_row_is_dead_lettered_and_does_not_block(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts)
    long_topic = "x" * 70_000
    box.add("t", b"alert 0", "dev", 0)
    box.add(long_topic, b"alert 1", "dev", 0)
    box.add("t", b"alert 2", "dev", 0)
    box.add("t", b"alert 3", "dev", 0)
    pub = Recorder()

    def publish(topic: str, payload: bytes) -> FakeHandle:
        if len(topic.encode()) > 65535:
            raise ValueError("topic too long")
        return pub(topic, payload)

    with caplog.at_level(logging.ERROR, logger="runtime.outbox"):
        assert box.pump(publish) == 3
    assert pub.payloads == alerts(0, 2, 3)  # the rows behind it still went out, within the cap
    assert counts["outbox_dead_letter"] == 1
    assert box.dead_letters == 1 and box.unacked == 3
    [record] = caplog.records
    assert "topic too long" in record.getMessage() and len(record.getMessage()) < 300
    box.close()

    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        [(topic, payload, reason)] = db.execute("SELECT topic, payload, reason FROM dead_letter")
    assert (topic, payload, reason) == (long_topic, b"alert 1", "topic too long")

    reopened = open_box(tmp_path, counts)  # the dead letter is not re-sent after a restart
    again = Recorder()
    assert reopened.pump(again) == 3 and again.payloads == alerts(0, 2, 3)
    assert reopened.dead_letters == 1 and counts["outbox_dead_letter"] == 1


def test_resend_after_resend_after_s_only_while_connected(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, resend_after_s=0.05)
    fill(box, 1)
    box.settle(connected=True)
    pub = Recorder()
    box.pump(pub)
    time.sleep(0.1)
    assert box.settle(connected=False) == []
    assert box.pump(pub) == 0  # disconnected: still in flight, not re-sent
    box.settle(connected=True)  # the link came back: paho's own re-send gets its chance first
    assert box.pump(pub) == 0 and counts["outbox_resent"] == 0
    time.sleep(0.1)
    box.settle(connected=True)
    assert counts["outbox_resent"] == 1
    assert box.pump(pub) == 1
    assert pub.payloads == alerts(0, 0)  # the same payload, so the same alert id
    pub.sent[-1][1].published = True
    assert len(box.settle(connected=True)) == 1 and box.unacked == 0


def test_alert_state_commits_with_the_alert(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    box.add("t", b"raised", "dev-a", 3)
    box.add("t", b"raised", "dev-b", 1)
    box.close()
    box = open_box(tmp_path)
    assert box.alert_state() == {"dev-a": 3, "dev-b": 1}
    box.add("t", b"cleared", "dev-a", 0)
    box.close()
    box = open_box(tmp_path)
    assert box.alert_state() == {"dev-b": 1}
    box.clear_alert_state()
    box.close()
    assert open_box(tmp_path).alert_state() == {}


def test_alert_state_is_recorded_when_the_alert_is_dropped(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, max_rows=1, overflow="drop_new")
    assert box.add("t", b"a", "dev", 2)
    assert not box.add("t", b"b", "dev", 4)
    assert box.alert_state() == {"dev": 4} and counts["outbox_dropped"] == 1


def test_drop_oldest_drops_the_oldest_unsent_row(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, max_rows=2)
    fill(box, 4)
    pub = Recorder()
    box.pump(pub)
    assert pub.payloads == alerts(2, 3) and counts["outbox_dropped"] == 2
    assert box.unacked == 2


def test_drop_oldest_with_everything_in_flight_forgets_the_handle(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, max_rows=2, max_inflight=5)
    fill(box, 2)
    pub = Recorder()
    assert box.pump(pub) == 2
    box.add("t", b"alert 2", "dev", 0)  # drops alert 0, which was in flight
    assert counts["outbox_dropped"] == 1 and box.unacked == 2
    pub.ack(b"alert 0")  # its late PUBACK changes nothing
    assert box.settle(connected=True) == [] and box.unacked == 2
    pub.ack(b"alert 1")
    assert len(box.settle(connected=True)) == 1 and box.unacked == 1
    assert box.pump(pub) == 1 and pub.payloads[-1] == b"alert 2"


def test_drop_new_is_counted(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, max_rows=2, overflow="drop_new")
    assert [box.add("t", bytes([i]), "dev", 0) for i in range(3)] == [True, True, False]
    assert counts["outbox_dropped"] == 1 and box.unacked == 2


@pytest.mark.parametrize(("mode", "pragma"), [("full", 2), ("normal", 1)])
def test_synchronous_pragma(tmp_path: Path, mode: str, pragma: int) -> None:
    box = open_box(tmp_path, synchronous=mode)
    assert box.db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    assert box.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_from_the_old_schema_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        db.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)"
        )
        db.executemany(
            "INSERT INTO outbox (topic, payload, created) VALUES (?, ?, ?)",
            [("t", b"old 0", 1.0), ("t", b"old 1", 2.0)],
        )
    db.close()
    box = open_box(tmp_path)
    assert box.unacked == 2 and box.dead_letters == 0 and box.alert_state() == {}
    pub = Recorder()
    assert box.pump(pub) == 2 and pub.payloads == [b"old 0", b"old 1"]
    box.add("t", b"new", "dev", 1)
    assert box.alert_state() == {"dev": 1} and box.unacked == 3


def test_dead_letters_are_bounded_like_the_outbox(tmp_path: Path) -> None:
    counts = FakeCounter()
    box = open_box(tmp_path, counts, max_rows=2, max_inflight=10)
    fill(box, 2, topic="bad/#")

    def refuse(topic: str, payload: bytes) -> FakeHandle:
        raise ValueError("Publish topic cannot contain wildcards.")

    box.pump(refuse)
    fill(box, 2, topic="bad/#")
    box.pump(refuse)
    assert box.dead_letters == 2 and box.unacked == 0
    assert counts["outbox_dead_letter"] == 4 and counts["outbox_dead_letter_dropped"] == 2


# ---- one transaction per round (runtime/outbox.py `batch`, runtime/alerts.py `round`) --------


def commits(box: Outbox) -> list[str]:
    """Every COMMIT SQLite runs on the outbox's connection from now on."""
    seen: list[str] = []
    box.db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("COMMIT") else None)
    return seen


def test_a_batch_of_alerts_costs_one_commit(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    seen = commits(box)
    fill(box, 3)
    assert len(seen) == 3  # one per alert outside a batch
    seen.clear()
    with box.batch():
        for i in range(50):
            assert box.add("t", f"round {i}".encode(), f"dev{i}", i % 2)
        assert not seen  # nothing committed before the block ends
    assert len(seen) == 1
    assert box.rows == 53
    with box.batch():
        pass
    assert len(seen) == 1  # an empty round commits nothing


def test_pump_inside_a_batch_is_refused(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    with box.batch():
        box.add("t", b"x", "dev", 0)
        with pytest.raises(RuntimeError, match="uncommitted"):
            box.pump(Recorder())
    assert box.pump(Recorder()) == 1


def test_a_failed_batch_rolls_back_and_the_counts_follow(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    fill(box, 2)
    with pytest.raises(ZeroDivisionError), box.batch():
        box.add("t", b"lost", "dev", 1)
        1 / 0  # noqa: B018
    assert box.rows == 2 and box.alert_state() == {}
    pub = Recorder()
    box.pump(pub)
    assert pub.payloads == alerts(0, 1)


KILL_AFTER_ROUND = """
import os, signal, sys
from pathlib import Path
from runtime.config import OutboxConfig
from runtime.outbox import Outbox
box = Outbox(Path(sys.argv[1]), OutboxConfig(), lambda name, n: None)
with box.batch():
    for i in range(int(sys.argv[2])):
        box.add("t", f"alert {i}".encode(), f"dev{i}", 1 + i % 3)
os.kill(os.getpid(), signal.SIGKILL)  # right after the round's commit: nothing closed cleanly
"""


def test_a_kill_right_after_the_round_loses_none_of_its_alerts(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.runtime.helpers import REPO

    n = 40
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_ROUND, str(tmp_path), str(n)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    box = open_box(tmp_path, max_inflight=100)
    pub = Recorder()
    assert box.pump(pub) == n
    assert pub.payloads == alerts(*range(n))
    assert box.alert_state() == {f"dev{i}": 1 + i % 3 for i in range(n)}


class FakeLink:
    """MqttLink as AlertPublisher uses it: publish returns a handle, never refuses."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False):
        self.published.append((topic, payload))
        return FakeHandle()


def test_a_round_of_n_alerts_is_one_commit_and_feedback_hears_after_it(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    import numpy as np

    from runtime.alerts import AlertPublisher
    from runtime.config import load_gateway_config
    from runtime.debounce import Debouncer
    from runtime.stats import Stats
    from runtime.streams import WindowResult

    cfg = load_gateway_config(None, {"model_dir": tmp_path, "debounce.emit": "all"})
    box = open_box(tmp_path, max_inflight=100)
    seen = commits(box)
    heard: list[tuple[str, int]] = []  # (alert id, outbox COMMITs when on_alert ran)
    publisher = AlertPublisher(
        cfg,
        FakeLink(),
        box,
        Stats(),
        on_alert=lambda body: heard.append((body["alert_id"], len(seen))),
    )
    manifest = SimpleNamespace(classes=["normal", "fault"], model_name="m", model_version="1")
    debouncer = Debouncer(1, 0.0)  # every fault window raises
    n = 25
    with publisher.round():
        for i in range(n):
            probs = np.array([0.1, 0.9], np.float32)
            result = WindowResult(f"d{i}", 1.0, 2.0 + i, probs, 0.0, 0.0, 0.0)
            publisher.on_window(result, manifest, debouncer)
        assert not seen and not heard
    assert len(seen) == 1
    assert [at for _, at in heard] == [1] * n  # every on_alert after the one commit
    pub = Recorder()
    assert box.pump(pub) == n
    bodies = [json.loads(p) for p in pub.payloads]
    assert [b["alert_id"] for b in bodies] == [a for a, _ in heard]
    assert {b["event"] for b in bodies} == {"raised"} and box.alert_state() == {
        f"d{i}": 1 for i in range(n)
    }
