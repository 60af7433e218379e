"""A throwaway RabbitMQ node on 127.0.0.1 for the scale-out tests (and bench/scaleout.py).

It runs the Debian package's server (`rabbitmq-server` 3.10) as the current user with every
file in one temporary folder: its own node name, AMQP, MQTT and distribution ports, its own
epmd port (so it never meets a system node), cookie (HOME), Mnesia, logs, enabled plugins
(deploy/rabbitmq/enabled_plugins, the file a gateway installs) and config. `stop()` ends the
node and its epmd and removes nothing the caller did not give it; the folder is the caller's.

    with LocalRabbit(tmp / "rabbit") as rabbit:
        declare_topology(rabbit.amqp_url, shards=3)
        ...  # devices publish MQTT to rabbit.mqtt_port; workers consume rabbit.amqp_url
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from edge_lstm.local_broker import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the package's, without the su wrapper
REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "deploy" / "rabbitmq" / "enabled_plugins"
START_TIMEOUT_S = 60.0  # a cold Erlang VM on a busy 2-core machine takes 5-15 s
STOP_TIMEOUT_S = 20.0


def find_rabbitmq() -> Path | None:
    """The server script of the Debian package, or None (apt-get install rabbitmq-server)."""
    if SERVER.is_file() and shutil.which("erl") and shutil.which("epmd"):
        return SERVER
    return None


class LocalRabbit:
    """One RabbitMQ node with the MQTT and consistent-hash plugins, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.host = "127.0.0.1"
        self.amqp_port = free_port()
        self.mqtt_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"edgelstm-test-{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/%2F"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.out"

    def _env(self) -> dict[str, str]:
        home = self.folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        config = self.folder / "rabbitmq.conf"
        config.write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = {self.host}:{self.amqp_port}",
                    f"mqtt.listeners.tcp.default = {self.host}:{self.mqtt_port}",
                    "mqtt.allow_anonymous = true",
                    "mqtt.default_user = guest",
                    "mqtt.default_pass = guest",
                    "loopback_users.guest = true",
                    "log.console = false",
                    "log.file.level = warning",
                    "",
                ]
            )
        )
        env = dict(os.environ)
        env.update(
            HOME=str(home),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(PLUGINS),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),  # not /etc's
            RABBITMQ_PID_FILE=str(self.folder / "rabbit.pid"),
        )
        env.pop("RABBITMQ_ADVANCED_CONFIG_FILE", None)
        return env

    def start(self) -> None:
        """Starts the node and waits until AMQP and MQTT both accept connections."""
        server = find_rabbitmq()
        if server is None:
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        env = self._env()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(server)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._accepts(self.amqp_port) and self._accepts(self.mqtt_port):
                return
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start within {START_TIMEOUT_S:.0f} s:\n{tail}")

    def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """`rabbitmqctl ARGS` against this node (its cookie, epmd port and node name); stdout.
        Raises CalledProcessError when it fails."""
        ctl = SERVER.parent / "rabbitmqctl"
        result = subprocess.run(
            [str(ctl), "-q", "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        return result.stdout

    def amqp_connections(self) -> list[str]:
        """The pids of the AMQP 0-9-1 client connections (the workers', not MQTT's)."""
        rows = [
            line.split("\t")
            for line in self.ctl("list_connections", "pid", "protocol").splitlines()
        ]
        return [row[0] for row in rows if len(row) == 2 and row[1].strip() == "{0,9,1}"]

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """queue -> (messages ready, messages unacknowledged)."""
        out = self.ctl("list_queues", "name", "messages_ready", "messages_unacknowledged")
        rows = [line.split("\t") for line in out.splitlines()]
        return {r[0]: (int(r[1]), int(r[2])) for r in rows if len(r) == 3 and r[1].isdigit()}

    def _accepts(self, port: int) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the node's process group (SIGKILL after STOP_TIMEOUT_S), then its epmd."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        epmd = shutil.which("epmd")
        if epmd:  # the node started its own epmd on epmd_port; it outlives the node otherwise
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"],
                capture_output=True,
                timeout=10,
                check=False,
            )

    def __enter__(self) -> LocalRabbit:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
