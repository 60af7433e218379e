"""The demo report (runs/demo/report.md + PNGs): what a reliability engineer needs to trust the
pipeline — models side by side, the live gateway's results against ground truth and against
the offline evaluation of the same model, detection delay per fault, runtime latency.

Inputs are the files the demo stages leave in the runs folder: student/comparison.json,
teacher/metrics.json, deploy/manifest.json, data/sensors.parquet and live/*.jsonl +
live/summary.json (converters/demo_live.py), plus timings.tsv from scripts/demo.sh.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
# The gateway measures this stage against the readings' own timestamps; the demo replays the
# recorded (historic) timestamps, so it is not a latency there.
SENSOR_CLOCK_STAGE = "reading_to_alert"


def gateway_latency(latency: dict[str, Any]) -> dict[str, Any]:
    """The stats' latency stages measured on the gateway's own clock (non-empty ones)."""
    return {k: v for k, v in latency.items() if v and k != SENSOR_CLOCK_STAGE}


# ---- reading the recordings ------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Payloads of a recorder file (one {"topic", "received_at", "payload"} per line)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeLstmError(f"{path} is missing: run the live stage (scripts/demo.sh) first")
    return [json.loads(line)["payload"] for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RunTruth:
    """Ground truth of one replayed run: reading timestamps and their labels."""

    ts: np.ndarray
    labels: np.ndarray

    def label_at(self, ts: float, tolerance: float = 1e-3) -> str | None:
        """The label of the reading at `ts` (a window's last reading), None if there is none."""
        i = int(np.searchsorted(self.ts, ts - tolerance))
        if i < len(self.ts) and abs(self.ts[i] - ts) <= tolerance:
            return str(self.labels[i])
        return None

    def onset(self, normal: str) -> tuple[str, float] | None:
        """(fault class, timestamp of its first reading), or None for a normal run."""
        faulty = np.flatnonzero(self.labels != normal)
        if faulty.size == 0:
            return None
        first = int(faulty[0])
        return str(self.labels[first]), float(self.ts[first])


def run_truths(
    readings: Any, run_column: str, ts_column: str, label_column: str, runs: list[str]
) -> dict[str, RunTruth]:
    """Per replayed run, its readings' timestamps and labels in time order."""
    out: dict[str, RunTruth] = {}
    subset = readings[readings[run_column].astype(str).isin(runs)]
    for run_id, group in subset.groupby(run_column, sort=False):
        group = group.sort_values(ts_column, kind="stable")
        out[str(run_id)] = RunTruth(
            group[ts_column].to_numpy(np.float64), group[label_column].astype(str).to_numpy()
        )
    return out


@dataclass
class LiveWindows:
    """Every window result the gateway published, keyed by (device, window end), with truth."""

    keys: list[tuple[str, float]]
    probs: np.ndarray  # [N, C]
    labels: np.ndarray  # [N] true class index
    unmatched: int  # results whose device or window end has no ground truth


def live_windows(
    messages: list[dict[str, Any]], truths: dict[str, RunTruth], classes: list[str]
) -> LiveWindows:
    """The `event: window` results joined with the label of each window's last reading."""
    index = {name: i for i, name in enumerate(classes)}
    keys, probs, labels, unmatched = [], [], [], 0
    for msg in messages:
        if msg.get("event") != "window":
            continue
        truth = truths.get(msg["device_id"])
        label = truth.label_at(msg["window_end_ts"]) if truth else None
        if label is None or label not in index:
            unmatched += 1
            continue
        keys.append((msg["device_id"], round(float(msg["window_end_ts"]), 3)))
        probs.append(msg["probs"])
        labels.append(index[label])
    return LiveWindows(
        keys,
        np.asarray(probs, np.float64).reshape(len(keys), len(classes)),
        np.asarray(labels, np.int64),
        unmatched,
    )


def agreement(
    live_keys: list[tuple[str, float]],
    live_probs: np.ndarray,
    offline_keys: list[tuple[str, float]],
    offline_probs: np.ndarray,
) -> dict[str, Any]:
    """How closely the live results match the offline evaluation on the same windows."""
    offline = {key: i for i, key in enumerate(offline_keys)}
    pairs = [(i, offline[key]) for i, key in enumerate(live_keys) if key in offline]
    matched = len(pairs)
    if not matched:
        return {"matched": 0, "live_only": len(live_keys), "offline_only": len(offline_keys)}
    li = np.array([p[0] for p in pairs])
    oi = np.array([p[1] for p in pairs])
    same = live_probs[li].argmax(axis=1) == offline_probs[oi].argmax(axis=1)
    return {
        "matched": matched,
        "live_only": len(live_keys) - matched,
        "offline_only": len(offline_keys) - matched,
        "argmax_agreement": float(same.mean()),
        "disagreements": int((~same).sum()),
        "max_abs_prob_diff": float(np.abs(live_probs[li] - offline_probs[oi]).max()),
    }


# ---- alerts and detection delay --------------------------------------------------------------


@dataclass
class RunDetection:
    """What the gateway raised for one replayed run."""

    run_id: str
    true_class: str  # the run's fault class, or the normal class
    onset_ts: float | None
    first_alert: str | None  # class of the first alert raised at/after onset (any, normal run)
    first_alert_ts: float | None
    delay_s: float | None  # onset -> end of the window that raised the right class
    false_alarms: int  # alerts before the onset, or any alert on a normal run


def detections(
    events: list[dict[str, Any]], truths: dict[str, RunTruth], normal: str
) -> list[RunDetection]:
    """Per run: first alert after the fault onset, delay to the right alert, false alarms."""
    raised: dict[str, list[tuple[float, str]]] = {}
    for e in events:
        if e.get("event") == "raised":
            raised.setdefault(e["device_id"], []).append((float(e["window_end_ts"]), e["class"]))
    out = []
    for run_id, truth in truths.items():
        alerts = sorted(raised.get(run_id, []))
        onset = truth.onset(normal)
        if onset is None:
            first = alerts[0] if alerts else (None, None)
            out.append(RunDetection(run_id, normal, None, first[1], first[0], None, len(alerts)))
            continue
        fault, onset_ts = onset
        after = [a for a in alerts if a[0] >= onset_ts]
        right = [a for a in after if a[1] == fault]
        out.append(
            RunDetection(
                run_id,
                fault,
                onset_ts,
                after[0][1] if after else None,
                after[0][0] if after else None,
                right[0][0] - onset_ts if right else None,
                len(alerts) - len(after),
            )
        )
    return out


def alert_confusion(rows: list[RunDetection], classes: list[str]) -> np.ndarray:
    """Runs by true class (rows) and first alerted class (columns; none = the normal class)."""
    index = {name: i for i, name in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for row in rows:
        cm[index[row.true_class], index[row.first_alert or classes[0]]] += 1
    return cm


def delay_table(rows: list[RunDetection], classes: list[str]) -> list[dict[str, Any]]:
    """Per fault class: runs, detected with the right class, missed, delay median/min/max."""
    table = []
    for name in classes[1:]:
        runs = [r for r in rows if r.true_class == name]
        if not runs:
            continue
        delays = [r.delay_s for r in runs if r.delay_s is not None]
        table.append(
            {
                "class": name,
                "runs": len(runs),
                "detected": len(delays),
                "missed": len(runs) - len(delays),
                "false_alarms": sum(r.false_alarms for r in runs),
                "median_s": float(np.median(delays)) if delays else None,
                "min_s": float(min(delays)) if delays else None,
                "max_s": float(max(delays)) if delays else None,
            }
        )
    return table


# ---- formatting ------------------------------------------------------------------------------


def _num(value: float | int | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, scale in (("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _matrix_table(cm: np.ndarray, classes: list[str], corner: str) -> str:
    header = [corner, *[c.replace("_", " ") for c in classes]]
    rows = [[classes[i], *[str(v) if v else "·" for v in cm[i]]] for i in range(len(classes))]
    return markdown_table(header, rows)


# ---- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_delays(table: list[dict[str, Any]], path: Path) -> Path:
    """Median detection delay per class with min–max whiskers; missed runs annotated."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(table), 3) + 1.5))
    names = [row["class"] for row in table]
    med = [row["median_s"] or 0.0 for row in table]
    lo = [(row["median_s"] or 0.0) - (row["min_s"] or 0.0) for row in table]
    hi = [(row["max_s"] or 0.0) - (row["median_s"] or 0.0) for row in table]
    y = np.arange(len(table))
    ax.barh(y, med, xerr=[lo, hi], color="#4c72b0", capsize=3)
    for i, row in enumerate(table):
        ax.text(
            row["max_s"] or 0.0,
            i,
            f"   {row['detected']}/{row['runs']} detected",
            va="center",
            fontsize=8,
        )
    ax.margins(x=0.15)
    ax.set_yticks(y, labels=names)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from fault onset to the first correct alert (sensor time)")
    ax.set_title("Detection delay per fault class (median, min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_latency(latency: dict[str, dict[str, float] | None], path: Path) -> Path:
    """p50/p95/p99/max per runtime stage (log scale: stages differ by orders of magnitude)."""
    plt = _pyplot()
    stages = [s for s, v in latency.items() if v]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    x = np.arange(len(stages))
    for k, q in enumerate(("p50", "p95", "p99", "max")):
        ax.bar(x + (k - 1.5) * width, [latency[s][q] for s in stages], width, label=q)
    ax.set_xticks(x, labels=[s.replace("_", " ") for s in stages])
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds")
    ax.set_title("Gateway latency per stage (live demo)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the report ------------------------------------------------------------------------------


@dataclass
class Offline:
    """The served artifact evaluated offline on the replayed runs' windows."""

    keys: list[tuple[str, float]]
    probs: np.ndarray
    labels: np.ndarray
    classes: list[str]
    readings: Any
    run_column: str
    ts_column: str
    label_column: str
    normal: str


def evaluate_offline(artifact: Path, data_path: Path, runs: list[str]) -> Offline:
    """Runs the served artifact (same file, same step graph) over the test windows offline."""
    from converters.predictors import open_predictor
    from edge_lstm.config import config_from_dict
    from edge_lstm.data.alignment import align_labels, align_windows
    from edge_lstm.data.prepare import prepare_data

    predictor = open_predictor(artifact)
    if predictor.config is None:
        raise EdgeLstmError(f"{artifact}: its manifest has no provenance config to rebuild data")
    cfg = config_from_dict(predictor.config, f"{artifact} provenance")
    prepared = prepare_data(cfg, data_path)
    ws = prepared.test
    keep = np.isin(ws.run_ids.astype(str), runs)
    x = align_windows(
        ws.x[keep],
        prepared.features,
        prepared.normalization,
        predictor.features,
        predictor.normalization,
    )
    keys = [
        (str(r), round(float(t), 3)) for r, t in zip(ws.run_ids[keep], ws.end_ts[keep], strict=True)
    ]
    return Offline(
        keys,
        predictor.predict_proba(x).astype(np.float64),
        align_labels(ws.y[keep], prepared.classes, predictor.classes),
        list(predictor.classes),
        prepared.readings,
        cfg.data.run_column,
        cfg.data.timestamp_column,
        cfg.data.label_column,
        cfg.data.normal_class,
    )


def _pipeline_section(runs_dir: Path) -> list[str]:
    comparison = runs_dir / "student" / "comparison.json"
    if not comparison.is_file():
        return ["*No comparison table: run `edgelstm distill` (student/comparison.json).*"]
    rows = json.loads(comparison.read_text())["rows"]
    cells = [
        [
            r["model"],
            r["runtime"],
            r["precision"],
            _num(r["macro_f1"]),
            _num(r["accuracy"]),
            _num(r["parameters"], ",d"),
            _size(r["size_bytes"]),
            _num(r["latency_ms_b1"], ".3f"),
            _num(r["latency_ms_b256"], ".2f"),
            r.get("notes", ""),
        ]
        for r in rows
    ]
    out = [
        "Every model scored on the same held-out test runs (windows of readings the models "
        "never trained on). Latency: median ms per call with one thread, for one window (b1) "
        "and a batch of 256 windows (b256). ONNX rows time the window graph (W readings at "
        "once); their notes give the step graph's cost per reading, which is what the gateway "
        "pays as each reading arrives.",
        "",
        markdown_table(
            [
                "model",
                "runtime",
                "precision",
                "macro-F1",
                "accuracy",
                "params",
                "size",
                "b1 ms",
                "b256 ms",
                "notes",
            ],
            cells,
        ),
    ]
    metrics = runs_dir / "teacher" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        base = m.get("baseline_meanstd_logreg", {}).get("macro_f1")
        if base is not None:
            out += [
                "",
                f"Reference: a logistic regression on each window's per-sensor mean and std "
                f"reaches macro-F1 {base:.4f} — the gap to the sequence models is what the "
                "temporal structure of the faults is worth.",
            ]
    return out


def _quantization_section(manifest: dict[str, Any]) -> list[str]:
    rows = []
    for name, art in manifest.get("artifacts", {}).items():
        info = art.get("info", {})
        if "argmax_agreement" not in info:
            continue
        rows.append(
            [
                name,
                _size(info.get("size_bytes_fp32")),
                _size(info.get("size_bytes")),
                f"{_num(info.get('macro_f1_fp32'))} → {_num(info.get('macro_f1'))}",
                _num(100 * info["argmax_agreement"], ".2f") + " %",
            ]
        )
    if not rows:
        return []
    return [
        "",
        "Quantized artifacts against their fp32 graph (test split):",
        "",
        markdown_table(["artifact", "fp32 size", "int8 size", "macro-F1", "same argmax"], rows),
    ]


def _batch_note(precision: str, agree: dict[str, Any]) -> str:
    """Why an int8-dynamic model's live probabilities differ slightly from the offline ones."""
    if precision != "int8-dynamic" or (agree.get("max_abs_prob_diff") or 0.0) <= 1e-4:
        return ""
    return (
        "The served model is int8-dynamic: ONNX Runtime quantizes each call's activations with "
        "one scale computed over the whole batch (DynamicQuantizeLinear), so a window's "
        "probabilities depend slightly on which other devices' rows shared its step call live "
        "and offline. An fp32 artifact matches to rounding (the deploy tests check ≤ 1e-4)."
    )


def _timings(runs_dir: Path) -> list[str]:
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


def write_report(runs_dir: Path) -> Path:
    """Builds runs_dir/report.md and its PNGs from the demo's outputs; returns the path."""
    from edge_lstm.metrics import compute_metrics, plot_confusion

    started = time.monotonic()
    runs_dir = Path(runs_dir)
    live = runs_dir / "live"
    summary_path = live / "summary.json"
    if not summary_path.is_file():
        raise EdgeLstmError(f"{summary_path} is missing: run the demo's live stage first")
    summary = json.loads(summary_path.read_text())
    deploy = runs_dir / "deploy"
    manifest = json.loads((deploy / "manifest.json").read_text())
    artifact = deploy / manifest["artifacts"][summary["artifact"]]["file"]
    runs = list(summary["runs"])

    offline = evaluate_offline(artifact, runs_dir / "data" / "sensors.parquet", runs)
    classes = offline.classes
    truths = run_truths(
        offline.readings, offline.run_column, offline.ts_column, offline.label_column, runs
    )
    messages = read_jsonl(live / "alerts.jsonl")
    windows = live_windows(messages, truths, classes)
    if not windows.keys:
        raise EdgeLstmError(
            f"{live / 'alerts.jsonl'} holds no window results: serve the demo with emit: all"
        )
    live_metrics = compute_metrics(windows.probs, windows.labels, classes)
    offline_metrics = compute_metrics(offline.probs, offline.labels, classes)
    agree = agreement(windows.keys, windows.probs, offline.keys, offline.probs)
    plot_confusion(
        live_metrics,
        classes,
        runs_dir / "live_confusion.png",
        title=f"Live gateway, every window ({summary['artifact']})",
    )

    rows = detections(messages, truths, offline.normal)
    delays = delay_table(rows, classes)
    alert_cm = alert_confusion(rows, classes)
    plot_confusion(
        alert_cm,
        classes,
        runs_dir / "alert_confusion.png",
        title="Live alerts per replayed run (column: first alert after onset)",
    )
    if delays:
        plot_delays(delays, runs_dir / "detection_delay.png")
    stats = read_jsonl(live / "stats.jsonl")
    latency = gateway_latency(stats[-1]["latency_ms"]) if stats else {}
    if latency:
        plot_latency(latency, runs_dir / "latency.png")

    md = _render(
        runs_dir,
        summary,
        manifest,
        classes,
        live_metrics,
        offline_metrics,
        agree,
        windows,
        rows,
        delays,
        alert_cm,
        stats,
        latency,
    )
    path = runs_dir / REPORT_FILE
    path.write_text(md)
    log.info("report written in %.1f s", time.monotonic() - started)
    (runs_dir / "report.json").write_text(
        json.dumps(
            {
                "live_metrics": {k: live_metrics[k] for k in ("n", "accuracy", "macro_f1")},
                "offline_metrics": {k: offline_metrics[k] for k in ("n", "accuracy", "macro_f1")},
                "agreement": agree,
                "detection_delay": delays,
                "latency_ms": latency,
                "live": summary,
            },
            indent=2,
        )
        + "\n"
    )
    return path


def _render(
    runs_dir: Path,
    summary: dict[str, Any],
    manifest: dict[str, Any],
    classes: list[str],
    live_metrics: dict[str, Any],
    offline_metrics: dict[str, Any],
    agree: dict[str, Any],
    windows: LiveWindows,
    rows: list[RunDetection],
    delays: list[dict[str, Any]],
    alert_cm: np.ndarray,
    stats: list[dict[str, Any]],
    latency: dict[str, Any],
) -> str:
    counts = summary["received"]
    replay = summary.get("replay") or {}
    detected = sum(d["detected"] for d in delays)
    fault_runs = sum(d["runs"] for d in delays)
    false_alarms = sum(r.false_alarms for r in rows)
    all_delays = [r.delay_s for r in rows if r.delay_s is not None]
    last = stats[-1] if stats else {"counters": {}, "latency_ms": {}}
    infer = latency.get("infer") or {}
    e2e = latency.get("receive_to_infer") or {}
    peak = max((s["rates"].get("readings_per_s", 0.0) for s in stats), default=0.0)
    agree_pct = 100 * agree.get("argmax_agreement", 0.0)

    out = [
        "# edgelstm demo report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from `{runs_dir}`. Model served: "
        f"**{manifest['model_name']} {manifest['model_version']}**, artifact "
        f"`{summary['artifact']}`, broker **{summary['broker']}**.",
        "",
        "## Summary",
        "",
        f"- Live gateway, every window of {len(summary['runs'])} held-out runs: macro-F1 "
        f"**{live_metrics['macro_f1']:.4f}**, accuracy {live_metrics['accuracy']:.4f} "
        f"({live_metrics['n']} windows; {counts.get('window', 0)} received of "
        f"{summary['expected_windows']} expected).",
        f"- Same windows evaluated offline with the same file: macro-F1 "
        f"{offline_metrics['macro_f1']:.4f}; the live class equals the offline class on "
        f"**{agree_pct:.2f} %** of {agree.get('matched', 0)} windows (max probability "
        f"difference {_num(agree.get('max_abs_prob_diff'), '.2e')}).",
        f"- Alerts: {detected} of {fault_runs} faulty runs alerted with the right class, median "
        f"delay {_num(float(np.median(all_delays)) if all_delays else None, '.1f')} s after the "
        f"fault onset; {false_alarms} false alarm(s).",
        f"- Gateway latency, reading received → inference start p50 {_num(e2e.get('p50'), '.3f')}"
        f" ms / p99 {_num(e2e.get('p99'), '.3f')} ms; inference p50 "
        f"{_num(infer.get('p50'), '.3f')} ms / p99 {_num(infer.get('p99'), '.3f')} ms.",
        f"- `edgelstm serve` stopped on SIGTERM with exit code {summary['serve_exit_code']} in "
        f"{summary['serve_stop_seconds']:.2f} s"
        + (", `offline` status published." if summary.get("offline_status_published") else "."),
        "",
        "## 1. Pipeline: teacher → student → ONNX → int8",
        "",
        *_pipeline_section(runs_dir),
        *_quantization_section(manifest),
        "",
        "## 2. The live gateway against ground truth",
        "",
        f"The held-out test runs were replayed over MQTT ({summary['broker']}) as live devices at "
        f"{summary['speedup']:g}× their recorded rate, and `edgelstm serve` published every "
        "window's class (`emit: all`). Each result is scored against the label of the "
        "window's last reading, exactly as offline.",
        "",
        "![live confusion matrix](live_confusion.png)",
        "",
        markdown_table(
            ["", "windows", "accuracy", "macro-F1", "weighted-F1", "kappa"],
            [
                [
                    name,
                    str(m["n"]),
                    _num(m["accuracy"]),
                    _num(m["macro_f1"]),
                    _num(m["weighted_f1"]),
                    _num(m["cohen_kappa"]),
                ]
                for name, m in (
                    ("live gateway", live_metrics),
                    ("offline, same file", offline_metrics),
                )
            ],
        ),
        "",
        f"Agreement with the offline evaluation: {agree.get('matched', 0)} windows matched by "
        f"(device, window end); same class on {agree_pct:.2f} % "
        f"({agree.get('disagreements', 0)} differ), largest probability difference "
        f"{_num(agree.get('max_abs_prob_diff'), '.2e')}; {agree.get('live_only', 0)} live-only, "
        f"{agree.get('offline_only', 0)} offline-only windows; {windows.unmatched} live results "
        "without ground truth.",
        "",
        _batch_note(manifest["artifacts"][summary["artifact"]]["precision"], agree),
        "",
        "## 3. Alerts per replayed run",
        "",
        "Debounced alerts as the gateway published them. Rows: each run's true class (its fault, "
        "or normal); columns: the first alert raised at or after the fault onset (normal = no "
        "alert).",
        "",
        _matrix_table(alert_cm, classes, "true \\ first alert"),
        "",
        "![alert confusion matrix](alert_confusion.png)",
        "",
        f"False alarms (an alert before the onset, or any alert on a normal run): {false_alarms}.",
        "",
        "## 4. Detection delay",
        "",
        "Seconds of sensor time from a fault's first labelled reading to the end of the window "
        "whose result raised the right alert. It includes the time a window needs to contain "
        "enough faulty readings and the debounce (k agreeing windows, one per hop); the "
        "gateway's own processing adds milliseconds (section 5).",
        "",
        markdown_table(
            ["fault", "runs", "detected", "missed", "false alarms", "median s", "min s", "max s"],
            [
                [
                    d["class"],
                    str(d["runs"]),
                    str(d["detected"]),
                    str(d["missed"]),
                    str(d["false_alarms"]),
                    _num(d["median_s"], ".1f"),
                    _num(d["min_s"], ".1f"),
                    _num(d["max_s"], ".1f"),
                ]
                for d in delays
            ],
        ),
        "",
        "![detection delay](detection_delay.png)" if delays else "",
        "",
        "## 5. Runtime latency and throughput",
        "",
        markdown_table(
            ["stage", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples"],
            [
                [
                    stage.replace("_", " "),
                    _num(v["p50"], ".3f"),
                    _num(v["p95"], ".3f"),
                    _num(v["p99"], ".3f"),
                    _num(v["max"], ".3f"),
                    str(v["n"]),
                ]
                for stage, v in latency.items()
            ],
        ),
        "",
        "![latency](latency.png)" if latency else "",
        "",
        "Stages: receive to infer = a reading's arrival at the gateway to the start of the step "
        "call that consumed it; infer = that call; publish = handing results to the MQTT "
        "client; ack = an alert's PUBACK from the broker. Reading-to-alert (sensor clock to "
        "alert) is left out: the replay keeps the recorded timestamps.",
        "",
        f"Replay: {int(replay.get('readings', 0))} readings of {int(replay.get('devices', 0))} "
        f"devices in {replay.get('seconds', 0):.1f} s ({replay.get('readings_per_s', 0):.0f} "
        f"readings/s offered). The gateway processed "
        f"{last['counters'].get('readings', 0)} readings and "
        f"{last['counters'].get('windows', 0)} windows, peaking at {peak:.0f} readings/s in a "
        "stats interval — the demo is paced by the replay, so this is not the gateway's limit: "
        "`make bench` measures sustained throughput against a bare MQTT subscriber.",
        "",
        *_timings(runs_dir),
        "## Files",
        "",
        "- `student/comparison.md` — the full comparison table; `teacher/metrics.json`",
        "- `deploy/manifest.json` — what the gateway verified and loaded",
        "- `live/alerts.jsonl`, `live/stats.jsonl`, `live/serve.log`, `live/broker.log`",
        "- `report.json` — the figures of this report",
        "",
    ]
    return "\n".join(out)
