"""The systemd unit: systemd's own checker accepts it and its hardening holds for our runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "edgelstm.service"
EXEC = "/opt/edgelstm/venv/bin/edgelstm"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


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


def test_unit_has_the_contract() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == [f"{EXEC} serve --config /etc/edgelstm/gateway.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["StateDirectory"] == ["edgelstm"]
    assert s["ReadWritePaths"] == ["/var/lib/edgelstm"]
    assert s["ReadOnlyPaths"] == ["/var/lib/edgelstm/models"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "User" in s or s.get("DynamicUser") == ["yes"]


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
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
