"""Serve-and-watch harness: `edgelstm serve` as a subprocess beside a local broker, and a
recorder of everything it publishes. The tests (tests/runtime/helpers.py), the benchmarks
(bench/) and the demo's live stage (edge_lstm/reporting/demo_live.py) all drive the gateway
through this one module.

Pieces, usable alone:

- `write_gateway_config(path, deploy, host, port, gateway_id=..., base=None, **sections)`: the
  one gateway-config writer. Layers, lowest first: `base` (a parsed YAML such as
  `example_config()`), then model_dir/gateway_id/broker host+port/state_dir (`path.parent /
  "state"`), then `sections`; a dict section is merged one level deep into what is there.
- `Recorder(host, port, topic="edgelstm/#")`: a paho subscriber (TCP_NODELAY) that keeps every
  message as `Message(topic, body, received_at)` (JSON decoded, else text). `bodies(event)`,
  `payloads(suffix)`, `latest_stats()`, `count(kind)`, `wait_count(kind, n, timeout_s)`,
  `wait_status("online", timeout_s, serve)`, `counts` (alert events seen), `last_message`;
  `jsonl_dir=` also appends alerts/stats/status records to `<kind>.jsonl` as they arrive.
- `ServeProcess(config, workdir, block_torch=False)`: `edgelstm serve --config CONFIG` with its
  output in `workdir/serve.log` (`.log`, `.tail()`); `block_torch=True` makes `import torch`
  raise in it (a gateway without torch). `.proc` is the Popen; `stop(timeout_s)` sends
  SIGTERM, kills after the timeout and returns the exit code (`.stop_seconds`: how long).
- `Gateway(workdir, deploy, host, port, gateway_id=..., **sections)`: the three together; it
  writes `workdir/gateway.yaml`, subscribes, starts serve and waits for `online` (raising
  `EdgeLstmError` with the log's tail if it never comes); `stop()` returns the exit code.

    with LocalBroker() as broker:
        gateway = Gateway(tmp / "gw", deploy, broker.host, broker.port, debounce={"emit": "all"})
        try:
            ...  # publish readings; gateway.recorder.wait_count("alerts", n, 30)
        finally:
            code = gateway.stop()

Imports neither torch nor anything of the training side, so torch-free tests can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.config import read_yaml
from edge_lstm.errors import EdgeLstmError
from runtime.mqtt import set_nodelay

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # holds edge_lstm/, runtime/, converters/
GATEWAY_EXAMPLE = SOURCE_ROOT / "configs" / "gateway.yaml"  # in a checkout
TORCH_BLOCKER = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test (gateway without torch)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""
JSONL_KINDS = ("alerts", "stats", "status", "drift")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc/<pid>/status, VmRSS); OSError once
    the process is gone (ProcessLookupError for a zombie, which has no VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(f"no VmRSS for process {pid}")


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    """Polls `predicate` until it holds or `timeout_s` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def edgelstm_command() -> list[str]:
    """The `edgelstm` entry point of the running interpreter's environment (else PATH's)."""
    script = Path(sys.executable).parent / "edgelstm"
    if script.exists():
        return [str(script)]
    found = shutil.which("edgelstm")
    if found is None:
        raise EdgeLstmError("the `edgelstm` command is not installed: run `make install`")
    return [found]


def python_env(*first: Path) -> dict[str, str]:
    """This environment with `first` and the source root ahead on PYTHONPATH, for a child
    Python that must import this checkout's packages."""
    env = dict(os.environ)
    paths = [str(p) for p in first] + [str(SOURCE_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))  # in order, once each
    return env


def example_config() -> dict[str, Any]:
    """configs/gateway.yaml, parsed: a `base` for `write_gateway_config`."""
    return read_yaml(GATEWAY_EXAMPLE)


def _merge(raw: dict[str, Any], sections: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in sections.items():
        old = raw.get(key)
        raw[key] = {**old, **value} if isinstance(value, dict) and isinstance(old, dict) else value
    return raw


def write_gateway_config(
    path: Path,
    deploy: Path,
    host: str,
    port: int,
    *,
    gateway_id: str = "gateway",
    base: Mapping[str, Any] | None = None,
    **sections: Any,
) -> Path:
    """Writes a gateway YAML serving `deploy` from the broker at host:port, state in
    `path.parent / "state"`; `sections` override (dicts merged one level deep). Returns path."""
    path = Path(path)
    raw = _merge(dict(base or {}), {
        "model_dir": str(Path(deploy).resolve()),
        "gateway_id": gateway_id,
        "broker": {"host": host, "port": port},
        "state_dir": str((path.parent / "state").resolve()),
    })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_merge(raw, sections), sort_keys=False))
    return path


class Message(NamedTuple):
    topic: str
    body: Any  # JSON-decoded payload, or its text when it is not JSON ("online", "")
    received_at: float  # time.time() at arrival


def _kind(topic: str) -> str:
    """`alerts`, `stats`, `status`, `heartbeat`: the level after edgelstm/<gateway_id>/."""
    levels = topic.split("/")
    return levels[2] if len(levels) > 2 else ""


class Recorder:
    """A paho subscriber (MQTT 3.1.1, TCP_NODELAY) that keeps everything it receives; a
    `client_id` makes its session persistent (messages kept across a reconnect)."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str = "edgelstm/#",
        *,
        client_id: str = "",
        qos: int = 1,
        jsonl_dir: Path | None = None,
        subscribe_timeout_s: float = 10.0,
    ) -> None:
        self.messages: list[Message] = []
        self.counts: dict[str, int] = {}  # alert-topic events ("window", "raised", ...) seen
        self.last_message = time.monotonic()
        self.lock = threading.Lock()
        self._by_kind: dict[str, list[Message]] = {}
        self._status_seen = 0  # statuses that wait_status has looked at
        self._files: dict[str, IO[str]] = {}
        if jsonl_dir is not None:
            for kind in JSONL_KINDS:
                self._files[kind] = open(Path(jsonl_dir) / f"{kind}.jsonl", "w")  # noqa: SIM115
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=not client_id,
        )
        set_nodelay(self.client)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=qos)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.subscribed.wait(subscribe_timeout_s):
            self.close()
            raise EdgeLstmError(f"the recorder could not subscribe to {topic} at {host}:{port}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            body: Any = json.loads(msg.payload)
        except ValueError:
            body = msg.payload.decode(errors="replace")
        message = Message(msg.topic, body, now)
        kind = _kind(msg.topic)
        with self.lock:
            self.messages.append(message)
            self._by_kind.setdefault(kind, []).append(message)
            if kind == "alerts" and isinstance(body, dict):
                event = body.get("event", "")
                self.counts[event] = self.counts.get(event, 0) + 1
            if kind in self._files:
                record = {"topic": msg.topic, "received_at": now, "payload": body}
                self._files[kind].write(json.dumps(record) + "\n")
            self.last_message = time.monotonic()

    def of_kind(self, kind: str) -> list[Message]:
        """Messages of one kind (`alerts`, `stats`, `status`, `heartbeat`), in arrival order."""
        with self.lock:
            return list(self._by_kind.get(kind, ()))

    def count(self, kind: str) -> int:
        with self.lock:
            return len(self._by_kind.get(kind, ()))

    def bodies(self, kind: str | None = None, topic_part: str = "/alerts/") -> list[dict]:
        """Decoded bodies on topics containing `topic_part`, of event `kind` if given."""
        with self.lock:
            out = [m.body for m in self.messages if topic_part in m.topic]
        return [b for b in out if isinstance(b, dict) and (kind is None or b.get("event") == kind)]

    def payloads(self, topic_suffix: str) -> list[Any]:
        """Bodies on topics ending with `topic_suffix` ("/stats", "/status")."""
        with self.lock:
            return [m.body for m in self.messages if m.topic.endswith(topic_suffix)]

    def latest_stats(self) -> dict[str, Any]:
        """The newest stats snapshot ({} before the first)."""
        with self.lock:
            stats = self._by_kind.get("stats")
            return stats[-1].body if stats else {}

    def wait_count(
        self, kind: str, n: int, timeout_s: float, serve: ServeProcess | None = None
    ) -> Message | None:
        """The n-th message of `kind` once it arrived; None after `timeout_s` (or once `serve`
        has exited)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                got = self._by_kind.get(kind, ())
                if len(got) >= n:
                    return got[n - 1]
            if time.monotonic() >= deadline or (serve is not None and not serve.running):
                return None
            time.sleep(0.005)

    def wait_status(self, wanted: str, timeout_s: float, serve: ServeProcess | None = None) -> bool:
        """Whether a status `wanted` arrives among the statuses this has not looked at yet
        (a retained `offline` of an earlier gateway is passed over); False after `timeout_s`
        or once `serve` has exited."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                statuses = self._by_kind.get("status", [])
                for i in range(self._status_seen, len(statuses)):
                    if statuses[i].body == wanted:
                        self._status_seen = i + 1
                        return True
                self._status_seen = len(statuses)
            if time.monotonic() >= deadline or (serve is not None and not serve.running):
                return False
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        with self.lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()


class ServeProcess:
    """`edgelstm serve --config CONFIG` in a subprocess, its output in `workdir/serve.log`;
    with `block_torch` its `import torch` raises (a gateway without torch)."""

    def __init__(self, config: Path, workdir: Path, *, block_torch: bool = False) -> None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        first: list[Path] = []
        if block_torch:
            blocker = workdir / "no_torch"
            blocker.mkdir(exist_ok=True)
            (blocker / "sitecustomize.py").write_text(TORCH_BLOCKER)
            first.append(blocker)
        self.log_path = workdir / "serve.log"
        self.stop_seconds = 0.0
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*edgelstm_command(), "serve", "--config", str(config)],
                env=python_env(*first),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGTERM (SIGKILL after `timeout_s`); the exit code. Already exited: its code."""
        if self.proc.poll() is None:
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.stop_seconds = time.monotonic() - started
        return self.proc.returncode


class Gateway:
    """Config, recorder and `edgelstm serve` for one deployment folder, online when built:
    `workdir/gateway.yaml`, `workdir/serve.log`, `workdir/state/`."""

    def __init__(
        self,
        workdir: Path,
        deploy: Path,
        host: str,
        port: int,
        *,
        gateway_id: str = "gateway",
        base: Mapping[str, Any] | None = None,
        block_torch: bool = False,
        qos: int = 1,
        jsonl_dir: Path | None = None,
        online_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        **sections: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.stop_timeout_s = stop_timeout_s
        self.config = write_gateway_config(
            self.workdir / "gateway.yaml",
            deploy,
            host,
            port,
            gateway_id=gateway_id,
            base=base,
            **sections,
        )
        self.recorder = Recorder(
            host, port, f"edgelstm/{gateway_id}/#", qos=qos, jsonl_dir=jsonl_dir
        )
        try:
            self.serve = ServeProcess(self.config, self.workdir, block_torch=block_torch)
        except BaseException:
            self.recorder.close()
            raise
        if not self.recorder.wait_status("online", online_timeout_s, self.serve):
            self.stop()
            raise EdgeLstmError(
                f"`edgelstm serve` did not come online; {self.serve.log_path}:\n"
                + self.serve.tail()
            )

    @property
    def pid(self) -> int:
        return self.serve.proc.pid

    def stop(self) -> int:
        """Stops serve (SIGTERM), waits briefly for its `offline`, closes the recorder; the
        exit code."""
        was_running = self.serve.running
        code = self.serve.stop(self.stop_timeout_s)
        if was_running:
            self.recorder.wait_status("offline", 5)
        self.recorder.close()
        return code

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
