"""The Mosquitto examples in deploy/mosquitto/ run on the real broker, enforce the ACL and
refuse packets bigger than the gateway could accept."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_lstm.local_broker import find_mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
CONFS = REPO / "deploy" / "mosquitto"
MOSQUITTO = find_mosquitto()

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"
    ),
]


def _localized(conf: Path, tmp: Path, port: int, files: dict[str, Path]) -> Path:
    """The example with its listener on a free loopback port and its files under tmp."""
    lines = []
    for line in conf.read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "persistence_location":
            line = f"persistence_location {tmp}/"
        elif key in files:
            line = f"{key} {files[key]}"
        lines.append(line)
    if os.geteuid() == 0:
        lines.append("user root")  # mosquitto drops root to `mosquitto`, which cannot read tmp
    lines.append(f"log_dest file {tmp / 'broker.log'}")
    out = tmp / conf.name
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture()
def start_broker(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(conf: Path, port: int) -> None:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on {port} within 10 s")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _connect(port: int, username: str | None = None, password: str | None = None, tls=None):
    """(client, queue of received messages, CONNACK reason) for MQTT v5; client None if refused."""
    received: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set_context(tls)
    client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
    client.on_disconnect = lambda c, u, f, rc, p: connected.put(f"disconnected ({rc})")
    client.on_message = lambda c, u, m: received.put((m.topic, m.payload))
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError) as exc:
        return None, None, exc
    client.loop_start()
    try:
        rc = connected.get(timeout=5)
    except queue.Empty:
        rc = "no CONNACK"
    if rc != 0:
        client.disconnect()
        client.loop_stop()
        return None, None, rc
    return client, received, rc


def _subscribe(client: mqtt.Client, topic: str) -> None:
    done: queue.Queue = queue.Queue()
    client.on_subscribe = lambda c, u, mid, codes, p: done.put(codes)
    client.subscribe(topic, qos=1)
    codes = done.get(timeout=5)
    assert not codes[0].is_failure, f"subscribe {topic}: {codes[0]}"


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)


def _until(received: queue.Queue, marker: str) -> list[str]:
    """Topics received up to and including `marker`: a message forbidden before the marker
    would have arrived before it (one publisher's messages keep their order)."""
    topics: list[str] = []
    deadline = time.monotonic() + 5
    while marker not in topics:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{marker} did not arrive within 5 s (got {topics})"
        try:
            topics.append(received.get(timeout=remaining)[0])
        except queue.Empty:
            continue
    return topics


def _check_acl(port: int, gateway, ops, bridge) -> None:
    """A gateway reads sensors and writes only its own prefix; ops see only what was allowed."""
    gw_client, gw_in, _ = gateway
    ops_client, ops_in, _ = ops
    bridge_client = bridge[0]
    _subscribe(gw_client, "sensors/+/data")
    _subscribe(ops_client, "edgelstm/#")

    _publish(bridge_client, "sensors/pump-7/data", b'{"ts": 1, "values": [0]}')
    assert _until(gw_in, "sensors/pump-7/data") == ["sensors/pump-7/data"]

    _publish(gw_client, "edgelstm/gateway-02/alerts/pump-7", b'{"class": "forged"}')
    _publish(gw_client, "sensors/pump-7/data", b'{"ts": 2, "values": [0]}')
    _publish(gw_client, "edgelstm/gateway-01/alerts/pump-7", b'{"class": "cavitation"}')
    seen = _until(ops_in, "edgelstm/gateway-01/alerts/pump-7")
    assert seen == ["edgelstm/gateway-01/alerts/pump-7"], "gateway wrote another's topic"

    # Mosquitto grants wildcard subscriptions and applies read rules per message
    _subscribe(ops_client, "sensors/+/data")
    _publish(bridge_client, "sensors/pump-8/data", b'{"ts": 3, "values": [0]}')
    _publish(gw_client, "edgelstm/gateway-01/stats", b"{}")
    assert _until(gw_in, "sensors/pump-8/data") == ["sensors/pump-8/data"], "gateway wrote data"
    assert _until(ops_in, "edgelstm/gateway-01/stats") == ["edgelstm/gateway-01/stats"]


def test_auth_conf_password_and_acl(tmp_path: Path, start_broker) -> None:
    passwd = tmp_path / "passwd"
    users = {"gateway-01": "g1-secret", "ops": "ops-secret", "bridge-line-a": "b-secret"}
    for i, (user, password) in enumerate(users.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(passwd), user, password],
            check=True,
            timeout=30,
        )
    port = free_port()
    conf = _localized(
        CONFS / "auth.conf",
        tmp_path,
        port,
        {"password_file": passwd, "acl_file": CONFS / "edgelstm.acl"},
    )
    assert "set_tcp_nodelay true" in conf.read_text()
    start_broker(conf, port)

    assert _connect(port)[2] != 0, "anonymous clients must be refused"
    assert _connect(port, "gateway-01", "wrong")[2] != 0, "a wrong password must be refused"
    clients = [_connect(port, user, users[user]) for user in ("gateway-01", "ops", "bridge-line-a")]
    try:
        for client, _, rc in clients:
            assert client is not None, rc
        _check_acl(port, *clients)
    finally:
        for client, _, _ in clients:
            if client is not None:
                client.disconnect()
                client.loop_stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_pki(tmp: Path) -> None:
    """A CA, a broker certificate for 127.0.0.1 and client certificates with CN = username."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=test-ca",
        cwd=tmp,
    )
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("broker", "gateway-01", "ops", "bridge-line-a", "rogue"):
        ca = "rogue-ca" if name == "rogue" else "ca"
        if name == "rogue":
            _openssl(
                "req",
                "-x509",
                *ec,
                "-days",
                "2",
                "-keyout",
                "rogue-ca.key",
                "-out",
                "rogue-ca.crt",
                "-subj",
                "/CN=rogue-ca",
                cwd=tmp,
            )
        _openssl(
            "req",
            *ec,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=tmp,
        )
        extra = ["-extfile", "san.ext"] if name == "broker" else []
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.crt",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            *extra,
            cwd=tmp,
        )


def _client_tls(tmp: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    if name:
        ctx.load_cert_chain(str(tmp / f"{name}.crt"), str(tmp / f"{name}.key"))
    return ctx


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_conf_client_certificates_and_acl(tmp_path: Path, start_broker) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
    port = free_port()
    conf = _localized(
        CONFS / "tls.conf",
        tmp_path,
        port,
        {
            "cafile": pki / "ca.crt",
            "certfile": pki / "broker.crt",
            "keyfile": pki / "broker.key",
            "acl_file": CONFS / "edgelstm.acl",
        },
    )
    assert "set_tcp_nodelay true" in conf.read_text()
    start_broker(conf, port)

    assert _connect(port, tls=_client_tls(pki, None))[2] != 0, "no client certificate: refused"
    assert _connect(port, tls=_client_tls(pki, "rogue"))[2] != 0, "foreign CA: refused"
    clients = [
        _connect(port, tls=_client_tls(pki, n)) for n in ("gateway-01", "ops", "bridge-line-a")
    ]
    try:
        for client, _, rc in clients:
            assert client is not None, rc
        _check_acl(port, *clients)
    finally:
        for client, _, _ in clients:
            if client is not None:
                client.disconnect()
                client.loop_stop()


def test_local_conf_serves_anonymous_loopback(tmp_path: Path, start_broker) -> None:
    port = free_port()
    conf = _localized(CONFS / "local.conf", tmp_path, port, {})
    assert "set_tcp_nodelay true" in conf.read_text()
    start_broker(conf, port)
    client, received, rc = _connect(port)
    assert client is not None, rc
    try:
        _subscribe(client, "edgelstm/#")
        _publish(client, "edgelstm/gateway-01/status", b"online")
        assert _until(received, "edgelstm/gateway-01/status") == ["edgelstm/gateway-01/status"]
    finally:
        client.disconnect()
        client.loop_stop()


def _max_packet_size(conf: Path) -> int | None:
    sizes = [
        int(line.split()[1])
        for line in conf.read_text().splitlines()
        if line.split(" ", 1)[0] == "max_packet_size"
    ]
    return sizes[-1] if sizes else None


def _gateway_defaults() -> tuple[int, int]:
    """(max_payload_bytes, limits.max_device_id_bytes) of a gateway config left at defaults."""
    from runtime.config import GatewayConfig, LimitsConfig

    payload = GatewayConfig.__dataclass_fields__["max_payload_bytes"].default
    return payload, LimitsConfig().max_device_id_bytes


@pytest.mark.parametrize("name", sorted(p.name for p in CONFS.glob("*.conf")))
def test_every_shipped_config_limits_the_packet_size(name: str) -> None:
    """Without a limit the broker queues any size for the gateway, which then drops it."""
    size = _max_packet_size(CONFS / name)
    max_payload, _ = _gateway_defaults()
    assert size is not None, f"{name} does not set max_packet_size"
    assert size >= max_payload + 1024, f"{name}: {size} leaves no room for topic and header"


def test_local_conf_disconnects_a_client_sending_a_packet_over_the_limit(
    tmp_path: Path, start_broker
) -> None:
    port = free_port()
    conf = _localized(CONFS / "local.conf", tmp_path, port, {})
    limit = _max_packet_size(conf)
    assert limit is not None
    start_broker(conf, port)
    max_payload, max_id = _gateway_defaults()
    subscriber, received, rc = _connect(port)
    assert subscriber is not None, rc
    publisher, _, rc = _connect(port)
    assert publisher is not None, rc
    marker_client, _, rc = _connect(port)
    assert marker_client is not None, rc
    dropped: queue.Queue = queue.Queue()
    publisher.on_disconnect = lambda c, u, f, reason, p: dropped.put(reason)
    try:
        _subscribe(subscriber, "sensors/#")
        largest = f"sensors/{'d' * max_id}/data"  # the biggest reading the gateway accepts
        _publish(publisher, largest, b"x" * max_payload)
        assert _until(received, largest) == [largest]

        publisher.publish("sensors/big/data", b"x" * limit, qos=1)
        reason = dropped.get(timeout=5)
        assert reason.value == 0x95, f"expected 'Packet too large', got {reason}"
        _publish(marker_client, "sensors/after/data", b"{}")
        assert _until(received, "sensors/after/data") == ["sensors/after/data"]
    finally:
        for client in (subscriber, publisher, marker_client):
            client.disconnect()
            client.loop_stop()
