"""The gateway connects to a TLS listener that requires a client certificate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_lstm.local_broker import LocalBroker, find_mosquitto
from tests.runtime.helpers import InProcessService, gateway_config

pytestmark = pytest.mark.broker


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_certs(folder: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca = ["-x509", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca"]
    _openssl("req", *KEY, *ca, cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        request = ["-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"]
        _openssl("req", *KEY, *request, cwd=folder)
        sign = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", *sign, "-out", f"{name}.crt",
            "-extfile", "san.ext", cwd=folder,
        )  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_service_connects_with_a_client_certificate(deploy_dir, tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("needs a mosquitto binary")
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    options = [
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'server.crt'}",
        f"keyfile {certs / 'server.key'}",
        "require_certificate true",
    ]
    with LocalBroker(listener_options=options) as broker:
        tls = {
            "ca_certs": str(certs / "ca.crt"),
            "certfile": str(certs / "client.crt"),
            "keyfile": str(certs / "client.key"),
        }
        config = gateway_config(
            tmp_path / "gw.yaml",
            deploy_dir("gru", None),
            broker.host,
            broker.port,
            broker={"host": broker.host, "port": broker.port, "tls": tls},
        )
        service = InProcessService(config)  # asserts that it connected
        assert service.stop() == 0
