"""The benchmark orchestrator: discovery, the clear refusal without a demo, the torch figure."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import summarize
from bench.plots import tradeoff_plot
from bench.run import benchmark_names, check_runs_dir, run_one
from edge_lstm.errors import EdgeLstmError
from edge_lstm.local_broker import find_mosquitto

REPO = Path(__file__).resolve().parents[2]


def test_summarize_is_median_min_max() -> None:
    assert summarize([3.0, 1.0, 10.0, 2.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    with pytest.raises(ValueError):
        summarize([])


def test_discovers_benchmarks_but_not_helpers() -> None:
    names = benchmark_names()
    assert {"torch_latency", "throughput", "latency", "window_close", "rss"} <= set(names)
    assert not {"run", "plots", "common", "bare_subscriber"} & set(names)


def test_every_benchmark_module_has_run_and_its_own_command_line() -> None:
    for name in ("throughput", "latency", "window_close", "rss"):
        assert callable(importlib.import_module(f"bench.{name}").run)
        result = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "--runs" in result.stdout


def test_refuses_a_runs_dir_without_the_demo(tmp_path: Path) -> None:
    with pytest.raises(EdgeLstmError, match="run `make demo` first"):
        check_runs_dir(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--runs", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "make demo" in result.stderr


def test_torch_latency_measures_teacher_and_student_in_one_run(tmp_path: Path, tiny_config) -> None:
    from tests.helpers_deploy import make_tiny_checkpoint

    make_tiny_checkpoint(tmp_path / "teacher", tiny_config, kind="teacher")
    make_tiny_checkpoint(tmp_path / "student", tiny_config, kind="student")
    outcome = run_one("torch_latency", tmp_path, quick=True)
    assert "error" not in outcome, outcome.get("traceback")
    result = outcome["result"]
    for batch in ("batch_1", "batch_256"):
        figures = result[batch]
        for name in ("teacher_ms", "student_ms", "ratio"):
            f = figures[name]
            assert f["n"] == result["rounds"]
            assert 0 < f["min"] <= f["median"] <= f["max"]


def test_a_failing_benchmark_is_recorded_not_raised(tmp_path: Path) -> None:
    outcome = run_one("torch_latency", tmp_path, quick=True)
    assert "model.pt is missing" in outcome["error"]
    assert outcome["seconds"] >= 0


def test_tradeoff_plot_skips_rows_without_latency(tmp_path: Path) -> None:
    rows = [
        {"model": "teacher", "runtime": "torch", "precision": "fp32", "macro_f1": 0.99,
         "size_bytes": 2_300_000, "latency_ms_b1": 4.1},
        {"model": "student", "runtime": "onnxruntime", "precision": "int8-dynamic",
         "macro_f1": 0.98, "size_bytes": 9_000, "latency_ms_b1": 0.03},
        {"model": "student", "runtime": "tensorrt", "precision": "fp16", "macro_f1": 0.98,
         "size_bytes": 40_000, "latency_ms_b1": None},
    ]  # fmt: skip
    path = tradeoff_plot(rows, tmp_path / "tradeoff.png", "test")
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError):
        tradeoff_plot(rows[2:], tmp_path / "none.png", "test")


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="needs a mosquitto binary")
def test_rss_bench_runs_small_and_writes_its_figures(tmp_path: Path, tiny_deploy_dir) -> None:
    """`python -m bench.rss --devices N` is the quick form of the 100k-id memory figure."""
    assert "rss" in benchmark_names()
    out = tmp_path / "rss.json"
    command = [
        sys.executable, "-m", "bench.rss", "--runs", str(tmp_path), "--model-dir",
        str(tiny_deploy_dir), "--devices", "300", "--max-devices", "100", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["max_devices"] == 100 and figures["baseline_rss_mb"] > 0
    assert [s["ids_sent"] for s in figures["steps"]] == [75, 100, 150, 300]
    keys = {"ids_sent", "devices", "rss_mb", "ratio_to_baseline", "growth_from_cap_mb"}
    for step in figures["steps"]:
        assert keys <= set(step) and step["rss_mb"] > 0
    assert figures["cap_point_ids"] == 100 and figures["growth_after_cap_mb"] is not None
    assert "RSS MB" in result.stdout


def _tiny_runs_dir(tmp_path: Path, tiny_deploy_dir: Path, tiny_data: Path) -> Path:
    """A runs folder shaped like the demo's (deploy/, data/sensors.parquet) on the tiny model."""
    runs = tmp_path / "runs"
    (runs / "data").mkdir(parents=True)
    (runs / "deploy").symlink_to(tiny_deploy_dir)
    (runs / "data" / "sensors.parquet").symlink_to(tiny_data)
    return runs


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="needs a mosquitto binary")
def test_throughput_bench_measures_the_runtime_on_v5_and_311_in_one_run(
    tmp_path: Path, tiny_deploy_dir: Path, tiny_data: Path
) -> None:
    from bench import throughput

    runs = _tiny_runs_dir(tmp_path, tiny_deploy_dir, tiny_data)
    out = throughput.run(runs, quick=True, devices=4, per_device=30, rounds=1)
    assert out["protocol"] == 5 and out["protocols"] == [5, 311]
    for fmt in ("json", "binary"):
        figures = out[fmt]
        for key in (  # the fields that were there, and the 3.1.1 runtime's beside them
            "runtime_readings_per_s",
            "bare_subscriber_readings_per_s",
            "ratio_runtime_to_bare",
            "bare_v311_readings_per_s",
            "runtime_v311_readings_per_s",
            "runtime_v311_cpu_us_per_reading",
            "ratio_runtime_v311_to_bare_v311",
            "ratio_runtime_v311_to_bare",
        ):
            assert figures[key]["n"] == 1 and figures[key]["median"] > 0, key
        ratio = figures["ratio_runtime_v311_to_bare_v311"]["median"]
        rates = figures["runtime_v311_readings_per_s"]["median"]
        assert ratio == pytest.approx(rates / figures["bare_v311_readings_per_s"]["median"])
        assert "runtime_v5_cost_us_per_reading" in figures["bounds"]
        assert figures["runtime_drops"] == {} and figures["runtime_v311_drops"] == {}


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="needs a mosquitto binary")
def test_latency_bench_has_a_311_point_beside_each_v5_point(
    tmp_path: Path, tiny_deploy_dir: Path, tiny_data: Path
) -> None:
    from bench import latency

    runs = _tiny_runs_dir(tmp_path, tiny_deploy_dir, tiny_data)
    out = latency.run(runs, quick=True, devices=(5,), extra_s=1.0, rounds=1)
    assert set(out) == {"devices_5", "devices_5_v311"}
    for key, protocol in (("devices_5", 5), ("devices_5_v311", 311)):
        point = out[key]
        assert point["protocol"] == protocol and point["devices"] == 5
        assert point["windows_per_round"]["median"] > 0
        assert point["missing_windows"] == [0], point
        assert point["reading_to_result_ms"]["p99"]["median"] > 0
        assert point["bare_hop_ms"]["p99"]["median"] > 0
