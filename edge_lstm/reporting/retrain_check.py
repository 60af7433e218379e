"""`edgelstm retrain-check`: should the served model be retrained? Rules over feedback, drift
and age, each giving one line; the command's exit code is 1 when any rule says retrain.

Rules (thresholds are the command's options):

- precision: a class whose alerts operators confirmed less than `min_precision` of the time over
  the last 7 days, with at least `min_verdicts` verdicts (confirmed + rejected) on it. From the
  feedback store (`--state-dir`, runtime/feedback.py) or the `feedback` section of the
  gateway's stats message (`--stats FILE` or `--broker`).
- drift: at least `max_drifting_share` of the devices the drift monitor judged were drifting
  (runtime/drift.py: a device drifts once its PSI stayed above the threshold for the gateway's
  `drift.for_s`), in every summary of the last `drifting_for_s` seconds (0: the latest
  summary). Summaries come from `--drift FILE` (one JSON object, a JSON list, or JSON lines)
  or `--broker`; keys used: `time` (unix s), `judged` and `drifting` (device counts).
- age: the deployment folder's manifest `created` more than `max_age_days` days ago.

A rule without its input says so in a "not checked" line and does not decide.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_lstm.errors import DataError
from edge_lstm.reporting.feedback_export import connect
from runtime.feedback import precision
from runtime.manifest import Manifest

WEEK = "7d"
RETRAIN, OK, NOT_CHECKED = "retrain", "ok", "not checked"


@dataclass(frozen=True)
class Thresholds:
    min_precision: float = 0.8
    min_verdicts: int = 20
    max_drifting_share: float = 0.2
    drifting_for_s: float = 0.0
    max_age_days: float = 90.0


@dataclass(frozen=True)
class Finding:
    verdict: str  # RETRAIN, OK or NOT_CHECKED
    text: str

    def line(self) -> str:
        return f"{self.verdict}: {self.text}"


@dataclass
class Inputs:
    """What the rules read; any may be missing."""

    week: dict[str, dict[str, Any]] | None = None  # class -> {confirmed, rejected, precision}
    drift: list[dict[str, Any]] | None = None
    manifest: Manifest | None = None


def read_json_records(path: Path) -> list[Any]:
    """One JSON document (an object or a list of them) or JSON lines."""
    text = path.read_text()
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except ValueError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DataError(f"{path}: neither JSON nor JSON lines ({exc})") from None


def week_from_stats(stats: list[Any], source: str) -> dict[str, dict[str, Any]] | None:
    """The 7-day precision table of the newest stats message that has a feedback section."""
    with_feedback = [s for s in stats if isinstance(s, dict) and "feedback" in s]
    if not with_feedback:
        return None
    try:
        return dict(with_feedback[-1]["feedback"]["precision"][WEEK])
    except (KeyError, TypeError):
        raise DataError(f"{source}: stats feedback section without precision.{WEEK}") from None


def week_from_store(state_dir: Path, now: float) -> dict[str, dict[str, Any]]:
    db = connect(state_dir)
    try:
        return precision(db, now)[WEEK]
    finally:
        db.close()


def check_precision(week: dict[str, dict[str, Any]] | None, t: Thresholds) -> list[Finding]:
    if week is None:
        return [
            Finding(NOT_CHECKED, "precision: no feedback (give --state-dir, --stats or --broker)")
        ]
    findings = []
    judged = 0
    for cls, row in sorted(week.items()):
        n = row["confirmed"] + row["rejected"]
        if n < t.min_verdicts:
            continue
        judged += 1
        if row["confirmed"] / n < t.min_precision:
            findings.append(
                Finding(
                    RETRAIN,
                    f"precision of {cls} alerts over the last week is "
                    f"{row['confirmed'] / n:.2f} ({row['confirmed']} confirmed, "
                    f"{row['rejected']} rejected) < {t.min_precision:.2f}",
                )
            )
    if findings:
        return findings
    if not judged:
        return [
            Finding(
                NOT_CHECKED,
                f"precision: no class has {t.min_verdicts} verdicts over the last week "
                f"({sum(r['confirmed'] + r['rejected'] for r in week.values())} in all)",
            )
        ]
    return [Finding(OK, f"precision >= {t.min_precision:.2f} for {judged} classes with verdicts")]


def _share(summary: dict[str, Any], source: str) -> float | None:
    try:
        judged, drifting = int(summary["judged"]), int(summary["drifting"])
        float(summary["time"])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{source}: a drift summary needs numbers `time`, `judged` and `drifting` "
            "(runtime/drift.py's summary on edgelstm/<gateway>/drift)"
        ) from None
    return drifting / judged if judged else None


def check_drift(summaries: list[dict[str, Any]] | None, t: Thresholds, source: str) -> Finding:
    if not summaries:
        return Finding(NOT_CHECKED, "drift: no drift summary (give --drift or --broker)")
    judged = sorted(
        (s for s in summaries if _share(s, source) is not None), key=lambda s: float(s["time"])
    )
    if not judged:
        return Finding(NOT_CHECKED, "drift: no device judged yet in the drift summaries")
    latest = judged[-1]
    span = [latest]
    if t.drifting_for_s > 0:
        start = float(latest["time"]) - t.drifting_for_s
        older = [s for s in judged if float(s["time"]) <= start]
        if not older:
            covered = float(latest["time"]) - float(judged[0]["time"])
            return Finding(
                NOT_CHECKED,
                f"drift: the summaries cover {covered:.0f} s, less than --drifting-for "
                f"{t.drifting_for_s:.0f} s",
            )
        span = [older[-1], *(s for s in judged if float(s["time"]) > start)]
    shares = [_share(s, source) or 0.0 for s in span]
    low = min(shares)
    over = f" for {t.drifting_for_s:.0f} s" if t.drifting_for_s > 0 else ""
    text = (
        f"{latest['drifting']} of {latest['judged']} judged devices drifting; at least "
        f"{low:.0%}{over}"
    )
    if low >= t.max_drifting_share:
        return Finding(RETRAIN, f"drift: {text} >= {t.max_drifting_share:.0%}")
    return Finding(OK, f"drift: {text}, below {t.max_drifting_share:.0%}")


def check_age(manifest: Manifest | None, t: Thresholds, now: float) -> Finding:
    if manifest is None:
        return Finding(NOT_CHECKED, "age: no deployment folder (give --model-dir)")
    if not manifest.created:
        return Finding(NOT_CHECKED, "age: the manifest has no `created` time")
    try:
        created = datetime.fromisoformat(manifest.created).timestamp()
    except ValueError:
        return Finding(NOT_CHECKED, f"age: unreadable manifest `created` {manifest.created!r}")
    days = (now - created) / 86_400
    text = f"model {manifest.model_name} {manifest.model_version} created {days:.0f} days ago"
    if days > t.max_age_days:
        return Finding(RETRAIN, f"age: {text} > {t.max_age_days:.0f}")
    return Finding(OK, f"age: {text}")


def listen(host: str, port: int, gateway_id: str, seconds: float) -> tuple[list, list]:
    """Stats and drift summaries of one gateway heard within `seconds` (sooner once both a
    stats message with feedback and a drift summary arrived)."""
    from edge_lstm.reporting.gateway_harness import Recorder

    recorder = Recorder(host, port, f"edgelstm/{gateway_id}/#", qos=0)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            stats, drift = recorder.payloads("/stats"), recorder.payloads("/drift")
            if drift and any(isinstance(s, dict) and "feedback" in s for s in stats):
                break
            time.sleep(0.1)
        return recorder.payloads("/stats"), recorder.payloads("/drift")
    finally:
        recorder.close()


def retrain_check(inputs: Inputs, t: Thresholds, drift_source: str, now: float) -> list[Finding]:
    return [
        *check_precision(inputs.week, t),
        check_drift(inputs.drift, t, drift_source),
        check_age(inputs.manifest, t, now),
    ]


def gather(
    *,
    state_dir: Path | None,
    stats_file: Path | None,
    drift_file: Path | None,
    broker: tuple[str, int] | None,
    gateway_id: str,
    listen_s: float,
    model_dir: Path | None,
    now: float,
) -> Inputs:
    """Reads every input given; the feedback store wins over stats messages for precision,
    a drift file's summaries and the broker's are used together."""
    stats: list[Any] = read_json_records(stats_file) if stats_file is not None else []
    drift: list[Any] = read_json_records(drift_file) if drift_file is not None else []
    if broker is not None:
        heard_stats, heard_drift = listen(*broker, gateway_id, listen_s)
        stats += heard_stats
        drift += [d for d in heard_drift if isinstance(d, dict)]
    week = (
        week_from_store(state_dir, now)
        if state_dir is not None
        else week_from_stats(stats, str(stats_file or "the broker's stats"))
    )
    return Inputs(
        week=week,
        drift=drift or None,
        manifest=Manifest.load(model_dir) if model_dir is not None else None,
    )
