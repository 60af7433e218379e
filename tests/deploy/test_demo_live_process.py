"""The demo's live stage on process data (one reading a minute, a device_id column): the drifting
device follows --drift-feature, and at the speedup scripts/demo.sh uses for process data the
gateway takes every reading without a gap and publishes every window, over a real Mosquitto."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_lstm.errors import EdgeLstmError
from edge_lstm.reporting.demo_live import (
    DRIFT_SIGMAS,
    HeldOutRuns,
    _drifting_device,
    check_drift_feature,
)
from edge_lstm.scenarios.process import FEATURE_NAMES, SAMPLE_PERIOD_S
from runtime.manifest import Manifest
from runtime.replay import Columns, Run

REPO = Path(__file__).resolve().parents[2]


def demo_default(scenario: str, name: str) -> str:
    """A DEFAULT_* setting of scenario's branch in scripts/demo.sh."""
    script = (REPO / "scripts" / "demo.sh").read_text()
    branch = re.search(rf"^{scenario}\)\n(.*?)\n\s*;;", script, re.S | re.M)
    assert branch is not None, f"no {scenario}) branch in demo.sh"
    found = re.search(rf"\b{name}=(\S+)", branch.group(1))
    assert found is not None, f"no {name} in demo.sh's {scenario} branch"
    return found.group(1)


def _process_manifest() -> Manifest:
    n = len(FEATURE_NAMES)
    return Manifest(
        model_name="student",
        model_version="t",
        model_kind="student",
        features=list(FEATURE_NAMES),
        norm_mean=[0.0] * n,
        norm_std=[float(k + 1) for k in range(n)],
        classes=["normal", "leak"],
        window=60,
        hop=10,
        sample_period_s=SAMPLE_PERIOD_S,
    )


def _run(run_id: str, labels: list[str]) -> Run:
    ts = 1.7e9 + SAMPLE_PERIOD_S * np.arange(len(labels))
    return Run(run_id, ts, np.zeros((len(labels), len(FEATURE_NAMES)), np.float32), labels)


def test_the_drifting_device_drifts_the_feature_it_is_given() -> None:
    manifest = _process_manifest()
    runs = [_run("leaky", ["normal"] * 50 + ["leak"] * 150), _run("calm", ["normal"] * 200)]
    held_out = HeldOutRuns(["leaky", "calm"], 0, Columns("run_id", "ts", "label"), 60, 10)
    feature = demo_default("process", "DEFAULT_DRIFT_FEATURE")
    assert feature in FEATURE_NAMES

    run, device = _drifting_device(runs, held_out, manifest, feature)
    k = FEATURE_NAMES.index(feature)
    assert (device.run_id, device.device_id, device.feature) == ("calm", "drift-calm", feature)
    assert device.windows == len(range(0, 200 - 60 + 1, 10))
    assert run.values[-1, k] == pytest.approx(DRIFT_SIGMAS * manifest.norm_std[k])
    assert not np.delete(run.values, k, axis=1).any()  # every other sensor untouched

    assert _drifting_device(runs, held_out, manifest, None) is None
    with pytest.raises(EdgeLstmError, match=r"temp_bearing_nde.*not a feature.*reactor_temp_b"):
        check_drift_feature("temp_bearing_nde", manifest)  # the pump default on process data


def test_an_unknown_drift_feature_stops_the_stage_before_a_broker_starts(
    tmp_path: Path, tiny_data: Path, tiny_config_path: Path, tiny_deploy_dir: Path
) -> None:
    from click.testing import CliRunner

    from edge_lstm.reporting.demo_live import main

    runs = tmp_path / "runs"
    (runs / "data").mkdir(parents=True)
    shutil.copy(tiny_data, runs / "data" / "sensors.parquet")
    shutil.copytree(tiny_deploy_dir, runs / "deploy")
    argv = ["--runs", str(runs), "--config", str(tiny_config_path), "--artifact", "step"]
    result = CliRunner().invoke(main, [*argv, "--drift-feature", "reactor_temp_b"])
    assert result.exit_code == 2
    assert "--drift-feature 'reactor_temp_b' is not a feature of the model" in result.output
    assert not (runs / "live").exists()


@pytest.fixture(scope="module")
def process_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A runs folder of small process data (8 h runs) with an untrained student exported into
    runs/deploy, and its config (configs/process.yaml, smaller windows and model)."""
    from edge_lstm.config import load_config
    from edge_lstm.scenarios import write_scenario
    from tests.helpers_deploy import make_tiny_deploy_dir

    root = tmp_path_factory.mktemp("process")
    runs = root / "runs"
    # seed 2, 4 runs per class: the split's 6 test runs hold a normal one to drift
    data = write_scenario("process", runs / "data" / "sensors.parquet", 2, 4, 480)
    raw = yaml.safe_load((REPO / "configs" / "process.yaml").read_text())
    raw["data"].update(path=str(data), window=60, stride=10)
    raw["student"].update(hidden_size=8)
    raw["export"].update(parity_windows=8)
    config = root / "process.yaml"
    config.write_text(yaml.safe_dump(raw))
    deploy = make_tiny_deploy_dir(root / "build", load_config(config), cell="lstm")
    shutil.copytree(deploy, runs / "deploy")
    return runs, config


@pytest.mark.broker
def test_the_process_demo_pace_loses_no_reading(process_runs: tuple[Path, Path]) -> None:
    from edge_lstm.local_broker import find_mosquitto
    from edge_lstm.reporting.demo_live import run_live
    from edge_lstm.reporting.report import write_report

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    runs, config = process_runs
    speedup = float(demo_default("process", "DEFAULT_SPEEDUP"))
    feature = demo_default("process", "DEFAULT_DRIFT_FEATURE")

    summary = run_live(runs, config, "step", speedup, 120, feature)
    assert summary["serve_exit_code"] == 0
    assert summary["received"]["window"] == summary["expected_windows"] > 0
    drifting = summary["drifting_device"]
    assert drifting is not None and drifting["feature"] == feature
    last = json.loads((runs / "live/stats.jsonl").read_text().splitlines()[-1])["payload"]
    counters = last["counters"]
    # a minute between readings is one period: no gap, no window restarted, nothing dropped
    assert last["missing_by_device"] == {}
    assert counters["windows"] == summary["expected_windows"] + drifting["windows"]
    assert counters["readings"] == summary["replay"]["readings"]
    assert not {k: v for k, v in counters.items() if re.search("drop|missing|outage", k)}
    # the monitor catches the drifting transmitter at this pace (mean shift ~5 spreads, 4 needed)
    events = [json.loads(line)["payload"] for line in (runs / "live/drift.jsonl").open()]
    raised = [e for e in events if e.get("device_id") == drifting["device_id"]]
    assert raised and raised[0]["event"] == "raised" and raised[0]["feature"] == feature

    text = write_report(runs).read_text()
    assert "one reading every 1 min;" in text and "Sensor times are given in minutes" in text
    assert f"at {speedup:g}× their recorded rate (one reading every 1 min, so 50 readings/s" in text
    assert "Minutes of sensor time from a fault's first labelled reading" in text
    assert "| median min | shortest min | longest min |" in text
    assert f"with `{feature}` creeping" in text
    assert "Hz" not in text and "bearing" not in text
