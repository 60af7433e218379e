"""A throwaway MQTT broker on 127.0.0.1 for the tests, the demo and the benchmarks.

Runs the system Mosquitto with a generated config (`set_tcp_nodelay true`, optional
persistence so sessions and retained messages survive `restart()`); only where no mosquitto
binary exists does it fall back to the embedded pure-Python amqtt broker, and `.kind` says which
one runs. Imports nothing of the training side, so the runtime's tests can use it too.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_lstm.errors import EdgeLstmError

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
START_TIMEOUT_S = 10.0

_AMQTT_SCRIPT = """
import asyncio, sys
from amqtt.broker import Broker
config = {{
    "listeners": {{"default": {{"type": "tcp", "bind": "{host}:{port}"}}}},
    "sys_interval": 0,
    "auth": {{"allow-anonymous": True}},
    "topic-check": {{"enabled": False}},
}}
async def main():
    broker = Broker(config)
    await broker.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def find_mosquitto() -> str | None:
    """Path of a mosquitto binary (PATH first, then the usual sbin folders), or None."""
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def mosquitto_conf(
    port: int,
    host: str = "127.0.0.1",
    persistence_dir: Path | None = None,
    listener_options: list[str] | None = None,
) -> str:
    """The local broker config: loopback listener, anonymous, TCP_NODELAY, bigger queues;
    `listener_options` (e.g. TLS cafile/certfile/keyfile lines) apply to that listener."""
    lines = [
        f"listener {port} {host}",
        *(listener_options or []),
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "max_queued_messages 100000",
        "max_inflight_messages 0",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if os.geteuid() == 0:
        # started as root, mosquitto drops to the `mosquitto` user, which cannot read the
        # caller's private temp folders (certificates, persistence)
        lines.append("user root")
    if persistence_dir is not None:
        lines += [
            "persistence true",
            f"persistence_location {persistence_dir}/",
            "autosave_interval 1",
        ]
    return "\n".join(lines) + "\n"


class LocalBroker:
    """start()/stop()/restart() a broker on `host:port`; also a context manager."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence_dir: Path | None = None,
        log_path: Path | None = None,
        listener_options: list[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.persistence_dir = Path(persistence_dir) if persistence_dir else None
        self.listener_options = listener_options or []
        self.binary = find_mosquitto()
        self.kind = "mosquitto" if self.binary else "amqtt"
        self._workdir = Path(tempfile.mkdtemp(prefix="edgelstm-broker-"))
        self.log_path = log_path or self._workdir / "broker.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        if self.binary:
            conf = self._workdir / "mosquitto.conf"
            if self.persistence_dir is not None:
                self.persistence_dir.mkdir(parents=True, exist_ok=True)
            conf.write_text(
                mosquitto_conf(self.port, self.host, self.persistence_dir, self.listener_options)
            )
            return [self.binary, "-c", str(conf)]
        try:
            import amqtt  # noqa: F401
        except ImportError:
            raise EdgeLstmError(
                "no MQTT broker available: install mosquitto (apt-get install mosquitto) "
                "or the embedded broker (pip install amqtt)"
            ) from None
        return [sys.executable, "-c", _AMQTT_SCRIPT.format(host=self.host, port=self.port)]

    def start(self) -> LocalBroker:
        """Starts the broker and waits until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            self._command(), stdout=logfile, stderr=logfile, start_new_session=True
        )
        logfile.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EdgeLstmError(
                    f"{self.kind} exited with code {self.proc.returncode} on port {self.port}; "
                    f"see {self.log_path}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.debug("%s broker up on %s", self.kind, self.url)
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise EdgeLstmError(f"{self.kind} did not open {self.url} within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stops the broker (SIGTERM, then SIGKILL after 5 s); persistence is saved on SIGTERM."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss would: nothing in flight is saved or delivered."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def restart(self) -> LocalBroker:
        """Stops and starts again on the same port (sessions kept when persistence is on)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)
