"""Shared by the gateway hardening tests: a clean-session config, a publisher, counters, window
checks and a listener for systemd notifications."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np

from runtime.parse import encode_json
from runtime.replay import Replayer, Run
from tests.runtime.helpers import (
    Collector,
    InProcessService,
    gateway_config,
)

GATEWAY = "test"
STATS = f"edgelstm/{GATEWAY}/stats"


def clean_config(path: Path, deploy: Path, host: str, port: int, **sections) -> Path:
    """gateway_config with a clean MQTT session: the gateway's client id is shared by every
    runtime test on the session broker, and a persistent session could hand this test
    readings another test left queued."""
    broker = {"host": host, "port": port, "clean_start": True, **sections.pop("broker", {})}
    return gateway_config(path, deploy, host, port, broker=broker, **sections)


def qos1_publisher(broker) -> Replayer:
    return Replayer(broker.host, broker.port, qos=1)


def send_run(publisher: Replayer, device_id: str, run: Run, lo: int = 0, hi: int | None = None):
    """Publishes readings lo..hi of a run as single JSON readings with their own timestamps."""
    for i in range(lo, len(run.ts) if hi is None else hi):
        publisher.send(device_id, encode_json(float(run.ts[i]), run.values[i].tolist()))


def counter(service: InProcessService, name: str) -> int:
    return service.counters().get(name, 0)


def windows(collector: Collector, device_id: str) -> dict[float, dict]:
    return {
        b["window_start_ts"]: b
        for b in collector.bodies("window")
        if b.get("device_id") == device_id
    }


def assert_windows_match(
    got: dict[float, dict], reference: dict[tuple[str, float], np.ndarray], device_id: str
) -> None:
    expected = {start for dev, start in reference if dev == device_id}
    assert set(got) == expected
    for start, body in got.items():
        probs = reference[(device_id, start)]
        assert np.abs(np.asarray(body["probs"]) - probs).max() <= 1e-4
        assert body["class_index"] == int(probs.argmax())


def has_line(datagram: str, field: str) -> bool:
    lines = datagram.split("\n")
    if field.endswith("="):
        return any(line.startswith(field) for line in lines)
    return field in lines


class NotifyListener:
    """A service manager's end of $NOTIFY_SOCKET: records (monotonic time, datagram)."""

    def __init__(self, path: Path) -> None:
        assert len(str(path)) < 100, f"Unix socket path too long: {path}"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.got.append((time.monotonic(), data.decode(errors="replace")))

    def received(self, field: str, after: float = 0.0) -> list[tuple[float, str]]:
        """(time, datagram) of those with the line `field` ("READY=1"; "STATUS=" matches any
        status line) that arrived after the monotonic time `after`."""
        with self.lock:
            got = list(self.got)
        return [(t, text) for t, text in got if t > after and has_line(text, field)]

    def times(self, field: str, after: float = 0.0) -> list[float]:
        return [t for t, _ in self.received(field, after)]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
