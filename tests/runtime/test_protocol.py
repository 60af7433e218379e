"""broker.protocol: 5 (default) or 311 (MQTT 3.1.1). What the gateway uses v5 for either works
under 3.1.1 or is refused in one line, and a broker that refuses v5 at connect is named with
the fix. The end-to-end run under 311 is in test_service.py (readings in, windows and alerts
out through Mosquitto); the scale-out workers run 311 against RabbitMQ (test_scaleout.py)."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from runtime.config import load_gateway_config
from runtime.errors import ConfigError
from runtime.mqtt import MqttLink
from tests.runtime.helpers import wait_until


def test_protocol_defaults_to_5_and_takes_311(tmp_path: Path) -> None:
    assert load_gateway_config(None, {"model_dir": tmp_path}).broker.protocol == 5
    cfg = load_gateway_config(None, {"model_dir": tmp_path, "broker.protocol": 311})
    assert cfg.broker.protocol == 311
    link = MqttLink(cfg, lambda *a: None, lambda exc: None)
    assert link.client.protocol == mqtt.MQTTv311


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"broker.protocol": 4}, "broker.protocol: must be 5 or 311 (5: MQTT v5; 311: MQTT 3.1.1"),
        ({"broker.protocol": "311"}, "broker.protocol: expected int"),
        (
            {"broker.protocol": 311, "broker.session_expiry_s": 3600},
            "broker.session_expiry_s: needs broker.protocol: 5; MQTT 3.1.1 has no session expiry",
        ),
    ],
)
def test_what_cannot_work_under_a_protocol_is_one_line(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(None, {"model_dir": tmp_path, **overrides})
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_session_expiry_is_fine_under_5_and_the_default_under_311(tmp_path: Path) -> None:
    v5 = load_gateway_config(None, {"model_dir": tmp_path, "broker.session_expiry_s": 3600})
    assert v5.broker.session_expiry_s == 3600
    v3 = load_gateway_config(None, {"model_dir": tmp_path, "broker.protocol": 311})
    assert v3.broker.clean_start is False  # a persistent session works under 3.1.1 too


class OnlyMqtt311:
    """A TCP listener that answers every CONNECT as a 3.1.1-only broker answers a v5 one:
    CONNACK with return code 1 (unacceptable protocol version), then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connects = 0
        self.versions: list[int] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    packet = conn.recv(4096)
                except OSError:
                    continue
                if packet[:1] == b"\x10":  # CONNECT: protocol level after "\x00\x04MQTT"
                    at = packet.find(b"MQTT")
                    self.versions.append(packet[at + 4] if at > 0 else -1)
                    self.connects += 1
                    conn.sendall(b"\x20\x02\x00\x01")

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def test_a_broker_that_refuses_v5_says_set_broker_protocol_311(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = OnlyMqtt311()
    cfg = load_gateway_config(
        None,
        {"model_dir": tmp_path, "broker.port": broker.port, "broker.reconnect_min_s": 1},
    )
    caplog.set_level(logging.INFO, logger="runtime.mqtt")
    link = MqttLink(cfg, lambda *a: None, lambda exc: None)
    link.start()
    try:
        assert wait_until(lambda: "set broker.protocol: 311" in caplog.text, 15), caplog.text
    finally:
        link.stop()
        broker.close()
    assert broker.versions and broker.versions[0] == 5  # the gateway asked for v5
    line = next(r for r in caplog.records if "set broker.protocol: 311" in r.getMessage())
    assert line.levelno == logging.ERROR
    assert "does not speak MQTT v5" in line.getMessage()
    assert f"127.0.0.1:{broker.port}" in line.getMessage()
    assert not link.connected.is_set()
