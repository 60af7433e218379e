"""report.md's text: one function per section over `ReportInputs`, the figures the report
gathered (edge_lstm/reporting/report.py)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.baselines.window_gbm import BASELINE_KEY
from edge_lstm.reporting.detection import RunDetection
from edge_lstm.reporting.drift_section import DriftSeen, drift_section
from edge_lstm.reporting.evidence import Scored, evidence_section
from edge_lstm.reporting.markdown import markdown_table, matrix_table, num
from edge_lstm.reporting.recordings import LiveWindows
from edge_lstm.reporting.sensor_time import TimeUnit, delay_unit, duration_text, rate_text
from edge_lstm.units import human_size


@dataclass
class ReportInputs:
    """Everything report.md is written from."""

    runs_dir: Path
    summary: dict[str, Any]  # live/summary.json
    manifest: dict[str, Any]  # deploy/manifest.json
    classes: list[str]
    live_metrics: dict[str, Any]  # every live window result against ground truth
    offline_metrics: dict[str, Any]  # the same file evaluated offline on the same runs
    agree: dict[str, Any]  # recordings.agreement of the two
    windows: LiveWindows
    rows: list[RunDetection]  # per replayed run
    delays: list[dict[str, Any]]  # detection.delay_table
    alert_cm: np.ndarray  # detection.alert_confusion
    stats: list[dict[str, Any]]  # live/stats.jsonl payloads
    latency: dict[str, Any]  # the last stats' gateway-clock latency stages
    evidence: list[Scored]  # evaluate's figures of the demo's models (evidence.demo_models)
    drift: DriftSeen  # live/drift.jsonl: the drift monitor's events and summaries

    @property
    def agree_pct(self) -> float:
        return 100 * self.agree.get("argmax_agreement", 0.0)

    @property
    def false_alarms(self) -> int:
        return sum(r.false_alarms for r in self.rows)

    @property
    def sample_period_s(self) -> float | None:
        """The data's reading period (the manifest's; None in folders exported before it)."""
        return self.manifest.get("sample_period_s")

    @property
    def unit(self) -> TimeUnit:
        """The unit of sensor time the delays are written in: seconds or minutes."""
        return delay_unit(self.sample_period_s)


def render(r: ReportInputs) -> str:
    """The whole of report.md."""
    sections = (
        _header,
        _summary,
        _pipeline,
        _live,
        _alerts,
        _delay,
        _drift,
        _latency,
        _timings,
        _files,
    )
    return "\n".join(line for section in sections for line in section(r))


def _header(r: ReportInputs) -> list[str]:
    return [
        "# edgelstm demo report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from `{r.runs_dir}`. Model served: "
        f"**{r.manifest['model_name']} {r.manifest['model_version']}**, artifact "
        f"`{r.summary['artifact']}`, broker **{r.summary['broker']}**.",
        "",
        _data_line(r),
        "",
    ]


def _readings(n: int | None, period_s: float | None) -> str:
    """'120 readings (2 h)'; without the duration when the period is unknown."""
    if n is None:
        return "? readings"
    return f"{n} readings" + (f" ({duration_text(n * period_s)})" if period_s else "")


def _data_line(r: ReportInputs) -> str:
    """What the data is, from the manifest: sensors, reading rate, classes, window and hop."""
    m, period = r.manifest, r.sample_period_s
    return (
        f"Data: {len(m.get('features') or [])} sensors, {rate_text(period)}; "
        f"{len(r.classes)} classes ({r.classes[0]} and {len(r.classes) - 1} faults). Windows of "
        f"{_readings(m.get('window'), period)}, a new one every "
        f"{_readings(m.get('hop'), period)}. Sensor times are given in {r.unit.word}."
    )


def _summary(r: ReportInputs) -> list[str]:
    counts, live, agree = r.summary["received"], r.live_metrics, r.agree
    detected = sum(d["detected"] for d in r.delays)
    fault_runs = sum(d["runs"] for d in r.delays)
    all_delays = [row.delay_s for row in r.rows if row.delay_s is not None]
    median_delay = float(np.median(all_delays)) if all_delays else None
    infer = r.latency.get("infer") or {}
    e2e = r.latency.get("receive_to_infer") or {}
    return [
        "## Summary",
        "",
        f"- Live gateway, every window of {len(r.summary['runs'])} held-out runs: macro-F1 "
        f"**{live['macro_f1']:.2f}**, accuracy {live['accuracy']:.2f} "
        f"({live['n']} windows; {counts.get('window', 0)} received of "
        f"{r.summary['expected_windows']} expected; their 95 % intervals are in section 1b).",
        f"- Same windows evaluated offline with the same file: macro-F1 "
        f"{r.offline_metrics['macro_f1']:.2f}; the live class equals the offline class on "
        f"**{r.agree_pct:.2f} %** of {agree.get('matched', 0)} windows (max probability "
        f"difference {num(agree.get('max_abs_prob_diff'), '.2e')}).",
        f"- Alerts: {detected} of {fault_runs} faulty runs alerted with the right class, median "
        f"delay {r.unit.text(median_delay)} of sensor time after the fault onset; "
        f"{r.false_alarms} false alarm(s).",
        f"- Gateway latency, reading received → inference start p50 {num(e2e.get('p50'), '.3f')}"
        f" ms / p99 {num(e2e.get('p99'), '.3f')} ms; inference p50 "
        f"{num(infer.get('p50'), '.3f')} ms / p99 {num(infer.get('p99'), '.3f')} ms.",
        f"- `edgelstm serve` stopped on SIGTERM with exit code {r.summary['serve_exit_code']} in "
        f"{r.summary['serve_stop_seconds']:.2f} s"
        + (", `offline` status published." if r.summary.get("offline_status_published") else "."),
        "",
    ]


def _pipeline(r: ReportInputs) -> list[str]:
    return [
        "## 1. Pipeline: teacher → student → ONNX → int8",
        "",
        *pipeline_section(r.runs_dir),
        *quantization_section(r.manifest),
        "",
        *evidence_section(r.evidence, r.unit),
    ]


def _baseline_note(runs_dir: Path) -> list[str]:
    """The teacher against the window-statistics baseline fitted on the same training runs: the
    two figures and their difference, no verdict (section 1b has the intervals)."""
    metrics = runs_dir / "teacher" / "metrics.json"
    if not metrics.is_file():
        return []
    m = json.loads(metrics.read_text())
    base = m.get(BASELINE_KEY, {}).get("macro_f1")
    teacher = m.get("teacher", {}).get("macro_f1")
    if base is None or teacher is None:
        return []
    return [
        "",
        f"Reference: gradient boosting on each window's statistics (per-sensor mean, std, min, "
        f"max, last−first, slope, lag-1 autocorrelation and cross-sensor sum/difference "
        f"spreads), fitted on the same training runs, reaches test macro-F1 {base:.3f} against "
        f"the teacher's {teacher:.3f} ({(teacher - base) * 100:+.1f} points on these test runs; "
        "section 1b gives the intervals and says whether the difference holds).",
    ]


STOPPED_BY = {
    "epochs": "ran all its epochs",
    "patience": "stopped early (no validation improvement for train.patience epochs)",
    "time budget": "was cut by the time budget (train.max_minutes): a run that depends on the "
    "machine's load, not reproducible as it stands",
}


def _training_note(runs_dir: Path) -> list[str]:
    """How each trained model's run ended, so a run the time budget cut is never silent."""
    lines = []
    for role in ("teacher", "student"):
        metrics = runs_dir / role / "metrics.json"
        if not metrics.is_file():
            continue
        training = json.loads(metrics.read_text()).get("training", {})
        reason = training.get("stop_reason")
        if reason is None:
            continue
        lines.append(
            f"- The {role} trained {training.get('epochs_run', '?')} epochs (best "
            f"{training.get('best_epoch', '?')}) and {STOPPED_BY.get(reason, reason)}."
        )
    return ["", *lines] if lines else []


def pipeline_section(runs_dir: Path) -> list[str]:
    """The comparison table of every model (student/comparison.json), with its headline lines
    (the reference, the seed study) and the teacher against the window baseline."""
    from converters.comparison import HEADER, load_table, table_cells

    comparison = runs_dir / "student" / "comparison.json"
    if not comparison.is_file():
        return ["*No comparison table: run `edgelstm distill` (student/comparison.json).*"]
    table = load_table(comparison)
    decimals = table.decimals()
    return [
        "Every model scored on the same held-out test runs (windows of readings the models "
        "never trained on), figures with the decimals the students' seed-to-seed spread "
        "supports. Latency: median ms per call with one thread, for one window (b1) and a batch "
        "of 256 windows (b256). ONNX rows time the window graph (W readings at once); their "
        "notes give the step graph's cost per reading, which is what the gateway pays as each "
        "reading arrives.",
        "",
        markdown_table(list(HEADER), [table_cells(row, decimals) for row in table.rows]),
        "",
        *table.headline(),
        *_baseline_note(runs_dir),
        *_training_note(runs_dir),
    ]


def _batch_cell(info: dict[str, Any]) -> str:
    if "batch_invariant" not in info:
        return "–"
    diff = num(info.get("max_batch_diff"), ".1g")
    return f"yes ({diff})" if info["batch_invariant"] else f"no (up to {diff})"


def quantization_section(manifest: dict[str, Any]) -> list[str]:
    """Each quantized artifact of the manifest against its fp32 graph: the accuracy guard's
    decision on validation, the test figures, and whether batching moves its results."""
    rows = []
    for name, art in manifest.get("artifacts", {}).items():
        info = art.get("info", {})
        guard = info.get("guard")
        if not guard:
            continue
        rows.append(
            [
                name,
                human_size(info.get("size_bytes_fp32")),
                human_size(info.get("size_bytes")),
                f"{num(guard['macro_f1_drop_points'], '+.2f')} of {guard['tolerance_points']:g}"
                f" ({guard['split']})",
                f"{num(info.get('macro_f1_fp32'), '.3f')} → {num(info.get('macro_f1'), '.3f')}",
                num(100 * info["argmax_agreement"], ".1f") + " %",
                _batch_cell(info),
            ]
        )
    if not rows:
        return []
    return [
        "",
        "Quantized artifacts against their fp32 graph. The accuracy guard decides on the "
        "validation split (drop in macro-F1 points against the tolerance); the test figures "
        "are reported, not used to decide. Batch-invariant: a window's probabilities alone and "
        "batched with other devices' rows agree (largest difference in brackets). A window graph "
        "whose recurrent op would stay fp32 is not written.",
        "",
        markdown_table(
            [
                "artifact",
                "fp32 size",
                "int8 size",
                "guard drop (split)",
                "test macro-F1",
                "same argmax (test)",
                "batch-invariant",
            ],
            rows,
        ),
    ]


def _metrics_row(name: str, m: dict[str, Any]) -> list[str]:
    return [
        name,
        str(m["n"]),
        num(m["accuracy"]),
        num(m["macro_f1"]),
        num(m["weighted_f1"]),
        num(m["cohen_kappa"]),
    ]


def _live(r: ReportInputs) -> list[str]:
    agree = r.agree
    precision = r.manifest["artifacts"][r.summary["artifact"]]["precision"]
    return [
        "## 2. The live gateway against ground truth",
        "",
        f"The held-out test runs were replayed over MQTT ({r.summary['broker']}) as live devices "
        f"at {r.summary['speedup']:g}× their recorded rate{_replay_pace(r)}, and `edgelstm "
        "serve` published every window's class "
        "(`emit: all`). Each result is scored against the label of the window's last reading, "
        "exactly as offline.",
        "",
        "![live confusion matrix](live_confusion.png)",
        "",
        markdown_table(
            ["", "windows", "accuracy", "macro-F1", "weighted-F1", "kappa"],
            [
                _metrics_row("live gateway", r.live_metrics),
                _metrics_row("offline, same file", r.offline_metrics),
            ],
        ),
        "",
        f"Agreement with the offline evaluation: {agree.get('matched', 0)} windows matched by "
        f"(device, window end); same class on {r.agree_pct:.2f} % "
        f"({agree.get('disagreements', 0)} differ), largest probability difference "
        f"{num(agree.get('max_abs_prob_diff'), '.2e')}; {agree.get('live_only', 0)} live-only, "
        f"{agree.get('offline_only', 0)} offline-only windows; {r.windows.unmatched} live results "
        "without ground truth.",
        "",
        batch_note(precision, agree),
        "",
    ]


def _replay_pace(r: ReportInputs) -> str:
    """' (one reading every 1 min, so 50 readings/s per device)' for a known sample period,
    else nothing."""
    if not r.sample_period_s:
        return ""
    per_s = r.summary["speedup"] / r.sample_period_s
    return f" ({rate_text(r.sample_period_s)}, so {per_s:.3g} readings/s per device)"


def batch_note(precision: str, agree: dict[str, Any]) -> str:
    """Why an int8-dynamic model's live probabilities differ slightly from the offline ones."""
    if precision != "int8-dynamic" or (agree.get("max_abs_prob_diff") or 0.0) <= 1e-4:
        return ""
    return (
        "The served model is int8-dynamic: ONNX Runtime quantizes each call's activations with "
        "one scale computed over the whole batch (DynamicQuantizeLinear), so a window's "
        "probabilities depend slightly on which other devices' rows shared its step call live "
        "and offline. An fp32 artifact matches to rounding (the deploy tests check ≤ 1e-4)."
    )


def _alerts(r: ReportInputs) -> list[str]:
    return [
        "## 3. Alerts per replayed run",
        "",
        "Debounced alerts as the gateway published them. Rows: each run's true class (its fault, "
        "or normal); columns: the first alert raised at or after the fault onset (normal = no "
        "alert).",
        "",
        matrix_table(r.alert_cm, r.classes, "true \\ first alert"),
        "",
        "![alert confusion matrix](alert_confusion.png)",
        "",
        f"False alarms (an alert before the onset, or any alert on a normal run): "
        f"{r.false_alarms}.",
        "",
    ]


def _delay_row(d: dict[str, Any], unit: TimeUnit) -> list[str]:
    return [
        d["class"],
        str(d["runs"]),
        str(d["detected"]),
        str(d["missed"]),
        str(d["false_alarms"]),
        unit.value(d["median_s"]),
        unit.value(d["min_s"]),
        unit.value(d["max_s"]),
    ]


def _delay(r: ReportInputs) -> list[str]:
    u = r.unit.symbol
    return [
        "## 4. Detection delay",
        "",
        f"{r.unit.word.capitalize()} of sensor time from a fault's first labelled reading to the "
        "end of the window whose result raised the right alert. It includes the time a window "
        "needs to contain enough faulty readings and the debounce (k agreeing windows, one per "
        "hop); the gateway's own processing adds milliseconds (section 5).",
        "",
        markdown_table(
            [
                "fault",
                "runs",
                "detected",
                "missed",
                "false alarms",
                f"median {u}",
                f"shortest {u}",
                f"longest {u}",
            ],
            [_delay_row(d, r.unit) for d in r.delays],
        ),
        "",
        "![detection delay](detection_delay.png)" if r.delays else "",
        "",
    ]


def _drift(r: ReportInputs) -> list[str]:
    run_class = {row.run_id: row.true_class for row in r.rows}
    started = r.summary.get("replay_started_at", 0.0)
    return drift_section(
        r.summary.get("drifting_device"),
        r.drift,
        started,
        run_class,
        normal=r.classes[0],
        speedup=r.summary.get("speedup"),
        unit=r.unit,
    )


def _latency_row(stage: str, v: dict[str, Any]) -> list[str]:
    return [
        stage.replace("_", " "),
        num(v["p50"], ".3f"),
        num(v["p95"], ".3f"),
        num(v["p99"], ".3f"),
        num(v["max"], ".3f"),
        str(v["n"]),
    ]


def _latency(r: ReportInputs) -> list[str]:
    return [
        "## 5. Runtime latency and throughput",
        "",
        markdown_table(
            ["stage", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples"],
            [_latency_row(stage, v) for stage, v in r.latency.items()],
        ),
        "",
        "![latency](latency.png)" if r.latency else "",
        "",
        "Stages: receive to infer = a reading's arrival at the gateway to the start of the step "
        "call that consumed it; infer = that call; publish = handing results to the MQTT "
        "client; ack = an alert's PUBACK from the broker. Reading-to-alert (sensor clock to "
        "alert) is left out: the replay keeps the recorded timestamps.",
        "",
        _throughput(r),
        "",
    ]


def _throughput(r: ReportInputs) -> str:
    replay = r.summary.get("replay") or {}
    last = r.stats[-1] if r.stats else {"counters": {}, "latency_ms": {}}
    peak = max((s["rates"].get("readings_per_s", 0.0) for s in r.stats), default=0.0)
    return (
        f"Replay: {int(replay.get('readings', 0))} readings of {int(replay.get('devices', 0))} "
        f"devices in {replay.get('seconds', 0):.1f} s ({replay.get('readings_per_s', 0):.0f} "
        f"readings/s offered). The gateway processed "
        f"{last['counters'].get('readings', 0)} readings and "
        f"{last['counters'].get('windows', 0)} windows, peaking at {peak:.0f} readings/s in a "
        "stats interval — the demo is paced by the replay, so this is not the gateway's limit: "
        "`make bench` measures sustained throughput against a bare MQTT subscriber."
    )


def _timings(r: ReportInputs) -> list[str]:
    return timings_section(r.runs_dir)


def timings_section(runs_dir: Path) -> list[str]:
    """Section 6 from scripts/demo.sh's timings.tsv (stage, seconds, result); none without."""
    path = runs_dir / "timings.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    total = sum(float(r[1]) for r in rows)
    return [
        "## 6. Demo stages",
        "",
        markdown_table(["stage", "seconds", "result"], [[r[0], r[1], r[2]] for r in rows]),
        "",
        f"Total of the stages above: {total / 60:.1f} min.",
        "",
    ]


def _files(r: ReportInputs) -> list[str]:
    return [
        "## Files",
        "",
        "- `student/comparison.md` — the full comparison table; `teacher/metrics.json`",
        "- `deploy/manifest.json` — what the gateway verified and loaded",
        "- `live/alerts.jsonl`, `live/stats.jsonl`, `live/serve.log`, `live/broker.log`",
        "- `report.json` — the figures of this report",
        "",
    ]
