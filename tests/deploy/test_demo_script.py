"""scripts/demo.sh's settings per scenario, read from its dry run (nothing is simulated or
trained): process data by default, the pump demo exactly as before with
EDGELSTM_DEMO_SCENARIO=pump, and the runs-folder contract checked before anything runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.sh"
DEMO_ENV = (
    "EDGELSTM_DEMO_SCENARIO",
    "EDGELSTM_DEMO_CONFIG",
    "EDGELSTM_DEMO_RUNS",
    "EDGELSTM_DEMO_SPEEDUP",
    "EDGELSTM_DEMO_DRIFT_FEATURE",
    "EDGELSTM_DEMO_RESUME",
)


def dry_run(**env: str) -> subprocess.CompletedProcess:
    """demo.sh with EDGELSTM_DEMO_DRY_RUN=1 and `env` (the caller's EDGELSTM_DEMO_* ignored)."""
    if not (REPO / ".venv" / "bin" / "edgelstm").exists():
        pytest.skip("no .venv/bin/edgelstm (make install)")
    clean = {k: v for k, v in os.environ.items() if k not in DEMO_ENV}
    return subprocess.run(
        ["bash", str(DEMO)],
        env={**clean, "EDGELSTM_DEMO_DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,  # a dry run takes a second; never let a broken one run the demo
    )


def settings(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


def test_the_demo_runs_on_process_data_by_default() -> None:
    got = settings(dry_run())
    assert got == {
        "scenario": "process",
        "simulate": ".venv/bin/edgelstm simulate --scenario process "
        "--out runs/process/data/sensors.parquet",
        "config": "configs/process.yaml",
        "runs": "runs/process",
        "speedup": "3000",
        "drift feature": "reactor_temp_b",
        "report": "runs/process/report.md",
    }


def test_the_pump_demo_is_the_one_before() -> None:
    got = settings(dry_run(EDGELSTM_DEMO_SCENARIO="pump"))
    assert got["simulate"] == (
        ".venv/bin/edgelstm simulate --scenario pump --runs-per-class 30 "
        "--out runs/demo/data/sensors.parquet"
    )
    assert (got["config"], got["runs"], got["speedup"]) == ("configs/demo.yaml", "runs/demo", "5")
    assert got["drift feature"] == "temp_bearing_nde"  # demo_live's own default


def test_the_overrides_still_win(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(f"data:\n  path: {tmp_path}/data/sensors.parquet\n")
    got = settings(
        dry_run(
            EDGELSTM_DEMO_CONFIG=str(config),
            EDGELSTM_DEMO_RUNS=str(tmp_path),
            EDGELSTM_DEMO_SPEEDUP="600",
            EDGELSTM_DEMO_DRIFT_FEATURE="none",
        )
    )
    assert (got["config"], got["runs"]) == (str(config), str(tmp_path))
    assert (got["speedup"], got["drift feature"]) == ("600", "none")


def test_a_config_reading_other_data_than_the_runs_folder_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "elsewhere"
    result = dry_run(EDGELSTM_DEMO_RUNS=str(runs))  # configs/process.yaml reads runs/process
    assert result.returncode == 2
    assert "reads data.path runs/process/data/sensors.parquet" in result.stderr
    assert not runs.exists()


def test_an_unknown_scenario_is_refused() -> None:
    result = dry_run(EDGELSTM_DEMO_SCENARIO="turbine")
    assert result.returncode == 2
    assert "choose process (the default) or pump" in result.stderr
