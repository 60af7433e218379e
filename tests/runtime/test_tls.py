"""The gateway connects to a TLS listener that requires a client certificate, and refuses (and
logs) a broker it cannot verify: a foreign CA, a certificate for another host name, and a
listener it cannot authenticate to without a client certificate."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_lstm.local_broker import LocalBroker, find_mosquitto
from tests.runtime.helpers import InProcessService, gateway_config

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
    pytest.mark.skipif(find_mosquitto() is None, reason="needs a mosquitto binary"),
]

REFUSED_FOR_S = 3.0  # two connection attempts at reconnect_min_s 1


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_certs(folder: Path, server_san: str = "IP:127.0.0.1") -> Path:
    """A throwaway CA, a server certificate for `server_san` and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = ["-x509", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca"]
    _openssl("req", *KEY, *ca, cwd=folder)
    (folder / "san.ext").write_text(f"subjectAltName={server_san}\n")
    for name in ("server", "client"):
        request = ["-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"]
        _openssl("req", *KEY, *request, cwd=folder)
        sign = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", *sign, "-out", f"{name}.crt",
            "-extfile", "san.ext", cwd=folder,
        )  # fmt: skip
    return folder


def tls_listener(certs: Path) -> list[str]:
    """Mosquitto listener lines: the server certificate of `certs`, client certificates required."""
    return [
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'server.crt'}",
        f"keyfile {certs / 'server.key'}",
        "require_certificate true",
    ]


def gateway_tls(ca: Path, client: Path | None) -> dict[str, object]:
    """broker.tls of the gateway config: trust `ca`, present the client certificate in `client`."""
    tls: dict[str, object] = {"ca_certs": str(ca / "ca.crt"), "insecure": False}
    if client is not None:
        tls |= {"certfile": str(client / "client.crt"), "keyfile": str(client / "client.key")}
    return tls


def assert_refused(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The service must not connect, must say so in a warning, and must still stop at once."""
    with caplog.at_level(logging.WARNING, logger="runtime"):
        service = InProcessService(config, connect_timeout_s=None)
        try:
            connected = service.service.link.wait_subscribed(REFUSED_FOR_S)
        finally:
            service.stop()
    assert not connected, "the gateway connected to a broker it must not trust"
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("runtime")
        and r.levelno >= logging.WARNING
        and "connection to mqtt://" in r.getMessage()
        and "failed" in r.getMessage()
    ]
    assert failures, f"no 'connection to mqtt://... failed' warning; got: {caplog.text!r}"


def test_service_connects_with_a_client_certificate(deploy_dir, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    with LocalBroker(listener_options=tls_listener(certs)) as broker:
        config = gateway_config(
            tmp_path / "gw.yaml",
            deploy_dir("gru", None),
            broker.host,
            broker.port,
            broker={"host": broker.host, "port": broker.port, "tls": gateway_tls(certs, certs)},
        )
        service = InProcessService(config)  # asserts that it connected
        assert service.stop() == 0


def test_a_server_certificate_from_another_ca_is_refused(deploy_dir, tmp_path: Path, caplog):
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")  # an independent CA the broker's certificate is not from
    with LocalBroker(listener_options=tls_listener(certs)) as broker:
        config = gateway_config(
            tmp_path / "gw.yaml",
            deploy_dir("gru", None),
            broker.host,
            broker.port,
            broker={"host": broker.host, "port": broker.port, "tls": gateway_tls(other, certs)},
        )
        assert_refused(config, caplog)


def test_a_server_certificate_for_another_host_name_is_refused(deploy_dir, tmp_path: Path, caplog):
    certs = make_certs(tmp_path / "certs", server_san="DNS:other.example")
    with LocalBroker(listener_options=tls_listener(certs)) as broker:
        config = gateway_config(
            tmp_path / "gw.yaml",
            deploy_dir("gru", None),
            broker.host,
            broker.port,
            broker={"host": broker.host, "port": broker.port, "tls": gateway_tls(certs, certs)},
        )
        assert_refused(config, caplog)


def test_a_listener_requiring_a_client_certificate_refuses_a_gateway_without_one(
    deploy_dir, tmp_path: Path, caplog
) -> None:
    certs = make_certs(tmp_path / "certs")
    # under TLS 1.3 the client's handshake completes and the broker's refusal arrives as an
    # alert on the first read: a connection that closes before any CONNACK is a failure too
    with LocalBroker(listener_options=tls_listener(certs)) as broker:
        config = gateway_config(
            tmp_path / "gw.yaml",
            deploy_dir("gru", None),
            broker.host,
            broker.port,
            broker={"host": broker.host, "port": broker.port, "tls": gateway_tls(certs, None)},
        )
        assert_refused(config, caplog)
