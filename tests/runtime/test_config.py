"""Gateway config: the shipped example loads, overrides win, mistakes name the file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runtime.config import load_gateway_config, parse_host_port
from runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_example_loads_and_cli_style_overrides_win(tmp_path: Path) -> None:
    cfg = load_gateway_config(
        REPO / "configs" / "gateway.yaml",
        {"model_dir": tmp_path, "broker.host": "10.1.2.3", "broker.port": 8883, "threads": 2},
    )
    assert cfg.model_dir == tmp_path and cfg.threads == 2
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.protocol) == ("10.1.2.3", 8883, 5)
    assert cfg.topic(cfg.topics.alerts, "pump-7") == "edgelstm/gateway-1/alerts/pump-7"
    assert cfg.client_id == "edgelstm-gateway-1" and cfg.broker.clean_start is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "model_dir: required"),
        ({"model_dir": "m", "brokr": {}}, "brokr: unknown key"),
        ({"model_dir": "m", "broker": {"prot": 5}}, "broker.prot: unknown key"),
        ({"model_dir": "m", "broker": {"port": "x"}}, "broker.port: expected int"),
        ({"model_dir": "m", "broker": {"protocol": 4}}, "broker.protocol: must be 5 or 311"),
        ({"model_dir": "m", "topics": {"sensors": "a/b"}}, "topics.sensors: needs exactly one"),
        ({"model_dir": "m", "debounce": {"k": 0}}, "debounce.k: must be >= 1"),
        ({"model_dir": "m", "debounce": {"emit": "some"}}, "debounce.emit: must be one of"),
        ({"model_dir": "m", "outbox": {"overflow": "x"}}, "outbox.overflow: must be one of"),
        ({"model_dir": "m", "outbox": {"max_inflight": 70000}}, "wrap at 65535"),
        ({"model_dir": "m", "backend": "tflite"}, "backend: must be one of"),
        ({"model_dir": "m", "prometheus_host": " "}, "prometheus_host: must be an address"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, raw: dict, message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_broker_address_parsing() -> None:
    assert parse_host_port("broker.local:1884") == ("broker.local", 1884)
    assert parse_host_port("broker.local") == ("broker.local", 1883)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_host_port("host:notaport")


def test_serve_reports_a_bad_model_dir_in_one_line(tmp_path: Path) -> None:
    edgelstm = Path(sys.executable).parent / "edgelstm"
    result = subprocess.run(
        [str(edgelstm), "serve", "--model-dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "manifest.json not found" in result.stderr


def test_shared_subscription_prefix_is_not_part_of_the_device_topic() -> None:
    from runtime.mqtt import device_id_position, topic_levels

    assert device_id_position("sensors/+/data") == 1
    assert topic_levels("$share/gw/sensors/+/data") == ["sensors", "+", "data"]
    assert device_id_position("$share/gw/sensors/+/data") == 1


def test_broken_yaml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("model_dir: m\nbroker:\n  host: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML (") and "\n" not in message
