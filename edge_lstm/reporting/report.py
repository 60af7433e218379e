"""The demo report (<runs>/report.md + PNGs; runs/process, or runs/demo for the pump demo):
what a reliability engineer needs to trust the pipeline — models side by side, the live
gateway's results against ground truth and against the offline evaluation of the same model,
detection delay per fault, runtime latency. Sensor times are in the data's own unit
(edge_lstm/reporting/sensor_time.py).

Inputs are the files the demo stages leave in the runs folder: student/comparison.json,
teacher/metrics.json, deploy/manifest.json, data/sensors.parquet and live/*.jsonl +
live/summary.json (edge_lstm/reporting/demo_live.py), plus timings.tsv from scripts/demo.sh.
This module gathers the figures (`gather`), draws the PNGs and writes report.md
(`render.render`) and report.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import compute_metrics, plot_confusion
from edge_lstm.reporting.detection import alert_confusion, delay_table, detections
from edge_lstm.reporting.drift_section import DriftSeen
from edge_lstm.reporting.evidence import demo_models, evidence_json
from edge_lstm.reporting.offline import evaluate_offline
from edge_lstm.reporting.plots import plot_delays, plot_latency
from edge_lstm.reporting.recordings import (
    agreement,
    gateway_latency,
    live_windows,
    read_jsonl,
    run_truths,
)
from edge_lstm.reporting.render import ReportInputs, render

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
FIGURES_FILE = "report.json"


def _read_live_inputs(runs_dir: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """live/summary.json, deploy/manifest.json and the path of the artifact that was served."""
    summary_path = runs_dir / "live" / "summary.json"
    if not summary_path.is_file():
        raise EdgeLstmError(f"{summary_path} is missing: run the demo's live stage first")
    summary = json.loads(summary_path.read_text())
    deploy = runs_dir / "deploy"
    manifest = json.loads((deploy / "manifest.json").read_text())
    artifact = deploy / manifest["artifacts"][summary["artifact"]]["file"]
    return summary, manifest, artifact


def gather(runs_dir: Path) -> ReportInputs:
    """Every figure of the report, from the runs folder (the served file is re-run offline)."""
    live = runs_dir / "live"
    summary, manifest, artifact = _read_live_inputs(runs_dir)
    runs = list(summary["runs"])
    offline = evaluate_offline(artifact, runs_dir / "data" / "sensors.parquet", runs)
    classes = offline.classes
    truths = run_truths(
        offline.readings, offline.run_column, offline.ts_column, offline.label_column, runs
    )
    drifting = summary.get("drifting_device")
    messages = [
        m
        for m in read_jsonl(live / "alerts.jsonl")
        if drifting is None or m.get("device_id") != drifting["device_id"]
    ]
    windows = live_windows(messages, truths, classes)
    if not windows.keys:
        raise EdgeLstmError(
            f"{live / 'alerts.jsonl'} holds no window results: serve the demo with emit: all"
        )
    rows = detections(messages, truths, offline.normal)
    stats = read_jsonl(live / "stats.jsonl")
    return ReportInputs(
        runs_dir=runs_dir,
        summary=summary,
        manifest=manifest,
        classes=classes,
        live_metrics=compute_metrics(windows.probs, windows.labels, classes),
        offline_metrics=compute_metrics(offline.probs, offline.labels, classes),
        agree=agreement(windows.keys, windows.probs, offline.keys, offline.probs),
        windows=windows,
        rows=rows,
        delays=delay_table(rows, classes),
        alert_cm=alert_confusion(rows, classes),
        stats=stats,
        latency=gateway_latency(stats[-1]["latency_ms"]) if stats else {},
        evidence=demo_models(runs_dir, manifest, summary["artifact"]),
        drift=DriftSeen.split(read_jsonl(live / "drift.jsonl"))
        if (live / "drift.jsonl").is_file()
        else DriftSeen([], []),
    )


def write_plots(r: ReportInputs) -> None:
    """live_confusion.png, alert_confusion.png, detection_delay.png and latency.png (the last
    two only when there is something to draw)."""
    plot_confusion(
        r.live_metrics,
        r.classes,
        r.runs_dir / "live_confusion.png",
        title=f"Live gateway, every window ({r.summary['artifact']})",
    )
    plot_confusion(
        r.alert_cm,
        r.classes,
        r.runs_dir / "alert_confusion.png",
        title="Live alerts per replayed run (column: first alert after onset)",
    )
    if r.delays:
        plot_delays(r.delays, r.runs_dir / "detection_delay.png", r.unit)
    if r.latency:
        plot_latency(r.latency, r.runs_dir / "latency.png")


def figures(r: ReportInputs) -> dict[str, Any]:
    """report.json: the report's headline figures, for scripts and tests."""
    return {
        "live_metrics": {k: r.live_metrics[k] for k in ("n", "accuracy", "macro_f1")},
        "offline_metrics": {k: r.offline_metrics[k] for k in ("n", "accuracy", "macro_f1")},
        "agreement": r.agree,
        "detection_delay": r.delays,
        "latency_ms": r.latency,
        "live": r.summary,
        "evidence": evidence_json(r.evidence),
        "drift_events": r.drift.events,
    }


def write_report(runs_dir: Path) -> Path:
    """Builds runs_dir/report.md and its PNGs from the demo's outputs; returns the path."""
    started = time.monotonic()
    inputs = gather(Path(runs_dir))
    write_plots(inputs)
    path = inputs.runs_dir / REPORT_FILE
    path.write_text(render(inputs))
    log.info("report written in %.1f s", time.monotonic() - started)
    (inputs.runs_dir / FIGURES_FILE).write_text(json.dumps(figures(inputs), indent=2) + "\n")
    return path
