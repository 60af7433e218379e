"""The systemd unit: systemd's own checker accepts it, its hardening holds for our runtime, and
what it promises matches what deploy/install.sh installs and what the daemon does (notify
protocol, watchdog cadence, signals, exit codes, memory bound)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter (dev extra) brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "edgelstm.service"
TEMPLATE = REPO / "deploy" / "edgelstm@.service"  # one worker of a sharded gateway
INSTALL = REPO / "deploy" / "install.sh"
EXEC = "/opt/edgelstm/venv/bin/edgelstm"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)


def _unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    """[Service]/[Unit]/[Install] keys -> their values in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def _one(key: str) -> str:
    values = _unit_settings().get(key)
    assert values, f"the unit sets no {key}="
    assert len(values) == 1, f"the unit sets {key}= {len(values)} times"
    return values[0]


def _seconds(span: str) -> float:
    """A systemd time span as seconds ("30", "30s", "2min", "500ms", "1min 30s")."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "ms": 1e-3, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span.strip())
    assert parts, f"not a time span: {span!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _bytes(size: str) -> float:
    """A systemd size ("1G", "512M", "1073741824"); infinity for "infinity"."""
    if size == "infinity":
        return float("inf")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", size)
    assert match, f"not an absolute size: {size!r}"
    return float(match[1]) * 1024 ** " KMGT".index(match[2] or " ")


def _local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at an executable that exists here (verify checks it)."""
    text = UNIT.read_text()
    assert EXEC in text
    local = tmp_path / "edgelstm.service"
    local.write_text(text.replace(EXEC, sys.executable))
    return local


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify prints unknown keys, bad values and missing executables but may still exit 0
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--json=short",
            str(_local_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    failed = {name for name, c in checks.items() if c["exposure"] not in (None, "0", 0, 0.0)}
    for must_pass in (
        "NoNewPrivileges=",
        "PrivateTmp=",
        "ProtectHome=",
        "ProtectSystem=",
        "MemoryDenyWriteExecute=",
        "RestrictAddressFamilies=~AF_PACKET",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
    ):
        assert must_pass not in failed, f"{must_pass} is not hardened"
    overall = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    score = float(overall.rsplit("Overall exposure level for edgelstm.service:", 1)[1].split()[0])
    assert score <= 1.5, overall[-400:]


# --- the unit against the layout install.sh writes --------------------------------------------


def _fake_deploy_dir(tmp_path: Path) -> Path:
    """Just what install.sh checks of a deployment folder: a manifest and sha256-true files."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "step.onnx").write_bytes(b"not really onnx")
    digest = hashlib.sha256(b"not really onnx").hexdigest()
    manifest = {
        "model_name": "tiny",
        "model_version": "1",
        "artifacts": {"step": {"file": "step.onnx", "sha256": digest}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/install.sh into a temporary root, with the default config it renders."""
    tmp = tmp_path_factory.mktemp("unit-install")
    root = tmp / "root"
    cmd = ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, "--no-pip"]
    result = subprocess.run(
        [*cmd, "--model", str(_fake_deploy_dir(tmp))], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return root


def _under(path: str, folders: list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(folder) for folder in folders)


def test_every_path_the_unit_names_is_installed(installed: Path) -> None:
    assert (installed / "etc/systemd/system/edgelstm.service").is_file()
    program, *args = _one("ExecStart").split()
    # the program is the console script pip puts into the venv install.sh creates
    assert (installed / program.lstrip("/")).parent.is_dir(), program
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert PurePosixPath(program).name in scripts
    assert args[:2] == ["serve", "--config"]
    config = installed / args[2].lstrip("/")
    assert config.is_file(), args[2]
    for key in ("ReadWritePaths", "ReadOnlyPaths"):
        for path in _one(key).split():
            assert (installed / path.lstrip("/")).is_dir(), f"{key}={path}"
    docs = _one("Documentation").removeprefix("file://")
    assert (installed / docs.lstrip("/")).is_file(), docs

    gateway = yaml.safe_load(config.read_text())
    writable = [*_one("ReadWritePaths").split(), f"/var/lib/{_one('StateDirectory')}"]
    read_only = _one("ReadOnlyPaths").split()
    # the daemon serves the folder install.sh links as current, which the unit keeps read-only
    model_dir = gateway["model_dir"]
    assert _under(model_dir, read_only), model_dir
    assert (installed / model_dir.lstrip("/") / "manifest.json").is_file()
    # and writes its outbox where ProtectSystem=strict still lets it
    assert _under(gateway["state_dir"], writable) and not _under(gateway["state_dir"], read_only)


def test_the_service_user_is_the_one_install_sh_creates() -> None:
    user = re.search(r"^SERVICE_USER=(\S+)$", INSTALL.read_text(), re.MULTILINE)
    assert user, "install.sh names no SERVICE_USER"
    assert _one("User") == user[1] != "root"
    assert "DynamicUser" not in _unit_settings()


# --- the unit against what the daemon does ----------------------------------------------------


@pytest.fixture()
def notify_socket(monkeypatch: pytest.MonkeyPatch):
    """A datagram socket standing in for systemd's, and the environment systemd would set."""
    folder = Path(tempfile.mkdtemp(prefix="sd-"))  # short: AF_UNIX paths stop at 107 bytes
    path = folder / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(_seconds(_one("WatchdogSec")) * 1e6)))
    yield server
    server.close()
    shutil.rmtree(folder)


def _received(server: socket.socket) -> list[str]:
    server.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(server.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        server.setblocking(True)


def test_type_notify_is_answered_with_ready(notify_socket: socket.socket) -> None:
    """Type=notify waits for READY=1 from the main process (NotifyAccess=main)."""
    from runtime.sdnotify import Notifier

    assert _one("Type") == "notify" and _one("NotifyAccess") == "main"
    # main = the ExecStart process itself: the console script, not a shell that forks it
    assert PurePosixPath(_one("ExecStart").split()[0]).name not in {"sh", "bash", "env"}
    # the notify socket is AF_UNIX, the broker AF_INET(6)
    assert set(_one("RestrictAddressFamilies").split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    notifier = Notifier()
    notifier.ready("serving tiny")
    assert notify_socket.recv(4096).decode().splitlines() == ["READY=1", "STATUS=serving tiny"]
    notifier.close()


def test_the_daemon_pings_the_watchdog_twice_per_timeout(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.sdnotify as sdnotify
    from runtime.daemon import IDLE_WAIT_S

    timeout_s = _seconds(_one("WatchdogSec"))
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(sdnotify, "time", SimpleNamespace(monotonic=lambda: clock.now))
    notifier = sdnotify.Notifier()
    every = notifier.watchdog_every_s
    assert every is not None and 2 * every <= timeout_s
    # the loop calls watchdog() at least every IDLE_WAIT_S when idle: far inside the interval
    assert every / 100 > IDLE_WAIT_S

    start, pings = clock.now, []
    for _ in range(int(2 * timeout_s / IDLE_WAIT_S)):  # two timeouts of an idle loop
        notifier.watchdog()
        pings += [clock.now for m in _received(notify_socket) if m == "WATCHDOG=1"]
        clock.now += IDLE_WAIT_S
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # the first ping goes out at once (systemd starts the timer at READY=1), then every half
    assert pings[0] == start
    assert len(pings) >= 4 and max(gaps) < timeout_s / 2 + 2 * IDLE_WAIT_S, gaps
    notifier.close()


def test_reload_and_stop_signals_reach_the_daemon() -> None:
    """ExecReload sends SIGHUP (reload); systemd stops with SIGTERM (drain, exit 0)."""
    from runtime.daemon import ACK_WAIT_S, DRAIN_BUDGET_S, Service

    assert _one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _unit_settings().get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]
    assert _one("KillMode") == "mixed"  # SIGTERM to the daemon only, SIGKILL to all at the end
    assert DRAIN_BUDGET_S + ACK_WAIT_S < 2 < _seconds(_one("TimeoutStopSec"))

    calls: list[str] = []
    stub = SimpleNamespace(
        request_stop=lambda: calls.append("stop"), request_reload=lambda: calls.append("reload")
    )
    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        Service.install_signal_handlers(stub)
        for sig in (signal.SIGHUP, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            deadline = time.monotonic() + 2
            while len(calls) < 1 + (sig == signal.SIGTERM) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert calls == ["reload", "stop"]


def test_a_failure_exit_is_restarted_and_a_clean_stop_is_not() -> None:
    from runtime.daemon import EXIT_NETWORK_DEAD

    # on-failure restarts a non-zero exit (the network thread ended: 3) but not exit 0
    assert _one("Restart") in {"on-failure", "always"}
    assert EXIT_NETWORK_DEAD != 0
    for key in ("SuccessExitStatus", "RestartPreventExitStatus"):
        assert str(EXIT_NETWORK_DEAD) not in " ".join(_unit_settings().get(key, [])).split()
    # ...and gives up on a crash loop instead of restarting forever
    assert int(_one("StartLimitBurst")) > 1 and _seconds(_one("StartLimitIntervalSec")) > 0


def test_memory_and_tasks_are_bounded() -> None:
    """A runaway queue must hit the unit's limit, not the gateway's other services."""
    memory = _bytes(_one("MemoryMax"))
    assert 256 * 1024**2 <= memory < float("inf")
    tasks = _one("TasksMax")
    assert tasks.isdigit() and 8 <= int(tasks) <= 1024
    assert int(_one("LimitNOFILE")) >= 1024


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

_MDWE_CHILD = f"""
import ctypes, mmap
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    raise SystemExit("the W^X guard is not active")
except PermissionError:
    pass
import threading
import numpy as np
import onnx
import onnxruntime as ort
import paho.mqtt.client as mqtt
from onnx import TensorProto, helper, numpy_helper

w = numpy_helper.from_array(np.random.default_rng(0).random((24, 32), dtype=np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Tanh", ["m"], ["y"])],
    "cell",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 24])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
    [w],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
assert session.run(None, {{"x": np.ones((256, 24), np.float32)}})[0].shape == (256, 32)
t = threading.Thread(target=lambda: None)
t.start()
t.join()
mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
print("ok")
"""


def _kernel_has_mdwe() -> bool:
    """PR_SET_MDWE (Linux 6.3+) is the kernel's version of MemoryDenyWriteExecute=yes."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import ctypes; print(ctypes.CDLL(None).prctl({PR_SET_MDWE + 1}, 0, 0, 0, 0))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # PR_GET_MDWE (66) returns >= 0 where the kernel knows the feature
    return probe.returncode == 0 and int(probe.stdout.strip() or -1) >= 0


@pytest.mark.skipif(not _kernel_has_mdwe(), reason="kernel < 6.3 has no PR_SET_MDWE")
def test_runtime_stack_works_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes must not break ONNX Runtime inference, threads or paho."""
    assert _one("MemoryDenyWriteExecute") == "yes"
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


# --- the worker template of a sharded gateway (deploy/rabbitmq/README.md) -------------------

# what a worker may set differently from edgelstm.service: its config, its own state folder,
# the broker it starts after and its texts; hardening, notify, watchdog and limits are shared
TEMPLATE_OWN_KEYS = {
    "Description",
    "Documentation",
    "After",
    "ExecStart",
    "StateDirectory",
    "ReadWritePaths",
}


def test_the_worker_template_is_the_unit_but_for_its_config_and_state() -> None:
    unit, template = _unit_settings(), _unit_settings(TEMPLATE)
    differs = {k for k in unit.keys() | template.keys() if unit.get(k) != template.get(k)}
    assert differs == TEMPLATE_OWN_KEYS
    assert template["ExecStart"] == [f"{EXEC} serve --config /etc/edgelstm/worker-%i.yaml"]
    # one outbox per worker: two workers must never share a SQLite outbox
    assert template["StateDirectory"] == ["edgelstm/worker-%i"]
    assert template["ReadWritePaths"] == ["/var/lib/edgelstm/worker-%i"]
    assert "rabbitmq-server.service" in template["After"][0].split()
    assert (REPO / "deploy" / "rabbitmq" / "README.md").is_file()


@needs_analyze
def test_a_worker_instance_verifies_and_stays_hardened(tmp_path: Path) -> None:
    instance = tmp_path / "edgelstm@0.service"
    text = TEMPLATE.read_text()
    assert EXEC in text
    instance.write_text(text.replace(EXEC, sys.executable))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    overall = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    score = float(overall.rsplit("Overall exposure level for edgelstm@0.service:", 1)[1].split()[0])
    assert score <= 1.5, overall[-400:]
