"""deploy/install.sh in a temporary root: installs, is idempotent, refuses damage, uninstalls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, "--no-pip"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def _tree(root: Path) -> dict[str, str]:
    """Every file and symlink under root with its content hash or link target."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes().hex()[:64] + str(path.stat().st_size)
    return out


@pytest.fixture()
def deploy_dir(tiny_deploy_dir: Path) -> Path:
    return tiny_deploy_dir


@pytest.fixture()
def gateway_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_dir": "/var/lib/edgelstm/models/current",
                "state_dir": "/var/lib/edgelstm/state",
                "gateway_id": "gateway-01",
            }
        )
    )
    return path


def test_install_twice_then_uninstall(tmp_path: Path, deploy_dir: Path, gateway_yaml: Path) -> None:
    root = tmp_path / "root"
    first = _install(root, "--model", str(deploy_dir), "--config", str(gateway_yaml))
    assert first.returncode == 0, first.stderr
    manifest = json.loads((deploy_dir / "manifest.json").read_text())
    prefix = f"{manifest['model_name']}-{manifest['model_version']}-"

    unit = root / "etc/systemd/system/edgelstm.service"
    assert unit.read_text() == (REPO / "deploy/edgelstm.service").read_text()
    assert (root / "etc/edgelstm/gateway.yaml").read_text() == gateway_yaml.read_text()
    assert oct((root / "etc/edgelstm/gateway.yaml").stat().st_mode & 0o777) == "0o640"
    models = root / "var/lib/edgelstm/models"
    name = os.readlink(models / "current")
    assert name.startswith(prefix)
    for art in manifest["artifacts"].values():
        assert (models / name / art["file"]).read_bytes() == (deploy_dir / art["file"]).read_bytes()
    venv_cfg = (root / "opt/edgelstm/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in venv_cfg
    assert not (root / "etc/systemd/system/edgelstm.service.d").exists()

    before = _tree(root)
    second = _install(root, "--model", str(deploy_dir), "--config", str(gateway_yaml))
    assert second.returncode == 0, second.stderr
    assert "already installed" in second.stdout
    assert _tree(root) == before

    removed = _install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not (root / "opt/edgelstm").exists()
    assert not models.exists()
    assert (root / "etc/edgelstm/gateway.yaml").is_file()  # config and outbox are kept

    purged = _install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/edgelstm").exists()
    assert not (root / "var/lib/edgelstm").exists()


def test_changed_config_is_not_overwritten(
    tmp_path: Path, deploy_dir: Path, gateway_yaml: Path
) -> None:
    root = tmp_path / "root"
    assert _install(root, "--model", str(deploy_dir), "--config", str(gateway_yaml)).returncode == 0
    edited = root / "etc/edgelstm/gateway.yaml"
    edited.write_text(edited.read_text() + "threads: 2\n")
    again = _install(root, "--config", str(gateway_yaml))
    assert again.returncode == 0, again.stderr
    assert edited.read_text().endswith("threads: 2\n")
    assert (root / "etc/edgelstm/gateway.yaml.new").read_text() == gateway_yaml.read_text()


def test_tampered_model_is_refused(tmp_path: Path, deploy_dir: Path, gateway_yaml: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(deploy_dir, damaged)
    step = (
        damaged / json.loads((damaged / "manifest.json").read_text())["artifacts"]["step"]["file"]
    )
    data = bytearray(step.read_bytes())
    data[-1] ^= 0xFF
    step.write_bytes(bytes(data))
    root = tmp_path / "root"
    result = _install(root, "--model", str(damaged), "--config", str(gateway_yaml))
    assert result.returncode == 2
    assert "does not match its manifest sha256" in result.stderr
    assert not (root / "var/lib/edgelstm/models/current").exists()


def test_jetson_gets_system_tensorrt_and_gpu_dropin(
    tmp_path: Path, deploy_dir: Path, gateway_yaml: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1\n")
    result = _install(root, "--model", str(deploy_dir), "--config", str(gateway_yaml))
    assert result.returncode == 0, result.stderr
    dropin = (root / "etc/systemd/system/edgelstm.service.d/jetson.conf").read_text()
    assert "PrivateDevices=no" in dropin
    assert "MemoryDenyWriteExecute=no" in dropin
    venv_cfg = (root / "opt/edgelstm/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in venv_cfg


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    missing = _install(tmp_path / "root", "--model", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "has no manifest.json" in missing.stderr
    unknown = _install(tmp_path / "root", "--frobnicate")
    assert unknown.returncode == 2
    assert "unknown option --frobnicate" in unknown.stderr


def test_first_install_without_config_serves_the_installed_model(
    tmp_path: Path, deploy_dir: Path
) -> None:
    from runtime.config import load_gateway_config

    root = tmp_path / "root"
    result = _install(root, "--model", str(deploy_dir))
    assert result.returncode == 0, result.stderr
    installed = root / "etc/edgelstm/gateway.yaml"
    cfg = load_gateway_config(installed)
    assert cfg.model_dir == Path("/var/lib/edgelstm/models/current")
    assert cfg.state_dir == Path("/var/lib/edgelstm/state")
    assert "warning" not in result.stderr
    again = _install(root, "--model", str(deploy_dir))
    assert again.returncode == 0 and not (root / "etc/edgelstm/gateway.yaml.new").exists()


def test_the_worker_template_is_installed_beside_the_unit_and_removed_with_it(
    tmp_path: Path, deploy_dir: Path, gateway_yaml: Path
) -> None:
    root = tmp_path / "root"
    result = _install(root, "--model", str(deploy_dir), "--config", str(gateway_yaml))
    assert result.returncode == 0, result.stderr
    template = root / "etc/systemd/system/edgelstm@.service"
    assert template.read_text() == (REPO / "deploy/edgelstm@.service").read_text()
    assert oct(template.stat().st_mode & 0o777) == "0o644"
    # its Documentation= points at the installed copy of the worker setup
    docs = next(
        line.split("file://", 1)[1]
        for line in template.read_text().splitlines()
        if line.startswith("Documentation=")
    )
    assert (root / docs.lstrip("/")).read_text() == (REPO / "deploy/rabbitmq/README.md").read_text()
    assert (root / "opt/edgelstm/deploy/rabbitmq/worker.example.yaml").is_file()
    assert "edgelstm@0" in result.stdout  # says how to start the workers
    # nothing enabled: no instance symlink under the root
    assert not list((root / "etc/systemd/system").rglob("edgelstm@[0-9]*"))

    removed = _install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not template.exists()
