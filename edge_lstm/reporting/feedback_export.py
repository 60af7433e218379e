"""`edgelstm feedback export`: alerts operators confirmed, as labelled training data.

Reads a gateway's `feedback.sqlite3` (runtime/feedback.py, runtime/alert_buffer.py; safe while
the gateway runs) and writes the readings kept around each alert in the training data's long
format (edge_lstm/data/loader.py): one row per reading, columns `run_id` (the alert id: every
alert is its own run), `ts` (unix s), `label`, then the feature columns in the manifest's order,
raw units. A confirmed alert's readings are labelled with the alert's class; with
`rejected_as_normal` a rejected alert's readings are labelled with the normal class (an
operator's "not a fault" is then taken as "normal", which is right for false alarms on a
healthy machine, not for a fault of another class, so it is off by default). The rows are in
run then time order, so the file can be appended to a training set with the same columns.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edge_lstm.errors import DataError
from runtime.alert_buffer import VALUE_DTYPE
from runtime.feedback import DB_FILE, open_readonly

SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass
class ExportSummary:
    """What an export wrote, and what it could not."""

    out: Path
    alerts: int = 0
    readings: int = 0
    labels: dict[str, int] = field(default_factory=dict)  # label -> alerts
    without_readings: int = 0  # verdicts whose alert or readings the gateway no longer holds

    def line(self) -> str:
        by_label = ", ".join(f"{n} {label}" for label, n in sorted(self.labels.items()))
        missing = (
            f"; {self.without_readings} verdicts without readings (alert not held)"
            if self.without_readings
            else ""
        )
        return (
            f"wrote {self.readings} readings of {self.alerts} alerts ({by_label or 'none'}) "
            f"to {self.out}{missing}"
        )


def feedback_db(state_dir: Path) -> Path:
    """The feedback store of a state dir (or the file itself)."""
    path = state_dir if state_dir.is_file() else state_dir / DB_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: no feedback store; the gateway writes it to its state_dir when "
            "feedback.enabled is true in its config"
        )
    return path


def connect(state_dir: Path) -> sqlite3.Connection:
    path = feedback_db(state_dir)
    try:
        db = open_readonly(path)
        db.execute("SELECT 1 FROM verdicts LIMIT 1")
    except sqlite3.Error as exc:
        raise DataError(f"{path}: not a feedback store ({exc})") from None
    return db


def export_feedback(
    state_dir: Path, out: Path, *, rejected_as_normal: bool = False
) -> ExportSummary:
    """Writes the labelled readings of the alerts with a verdict to `out` (.csv or .parquet)."""
    if not out.name.lower().endswith(SUFFIXES):
        raise DataError(f"--out {out}: the file must end with {', '.join(SUFFIXES)}")
    db = connect(state_dir)
    verdicts = ("confirmed", "rejected") if rejected_as_normal else ("confirmed",)
    rows = db.execute(
        "SELECT v.alert_id, v.verdict, a.seq, a.class, a.normal_class, a.features "
        f"FROM verdicts v LEFT JOIN alerts a USING (alert_id) WHERE v.verdict IN "
        f"({', '.join('?' * len(verdicts))}) ORDER BY a.seq",
        verdicts,
    ).fetchall()
    summary = ExportSummary(out)
    frames = []
    features: list[str] | None = None
    for alert_id, verdict, seq, cls, normal, names in rows:
        readings = [] if seq is None else _readings(db, seq)
        if not readings:
            summary.without_readings += 1
            continue
        names = json.loads(names)
        if features is None:
            features = names
        elif names != features:
            raise DataError(
                f"{state_dir}: alert {alert_id} was recorded under another feature list than "
                "the alerts before it (the model was replaced); export before changing models"
            )
        label = cls if verdict == "confirmed" else normal
        ts = np.asarray([t for t, _ in readings])
        values = np.stack([np.frombuffer(v, VALUE_DTYPE) for _, v in readings])
        frame = pd.DataFrame(values, columns=names)
        frame.insert(0, "label", label)
        frame.insert(0, "ts", ts)
        frame.insert(0, "run_id", alert_id)
        frames.append(frame)
        summary.alerts += 1
        summary.readings += len(frame)
        summary.labels[label] = summary.labels.get(label, 0) + 1
    db.close()
    if not frames:
        raise DataError(
            f"{state_dir}: no {' or '.join(verdicts)} alert with readings to export "
            f"({summary.without_readings} verdicts whose alert is not held)"
        )
    table = pd.concat(frames, ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.lower().endswith(".csv"):
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    return summary


def _readings(db: sqlite3.Connection, seq: int) -> list[tuple[float, bytes]]:
    return db.execute(
        "SELECT ts, vals FROM alert_readings WHERE alert_seq = ? ORDER BY ts", (seq,)
    ).fetchall()
