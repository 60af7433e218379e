"""report.md's drift section: what the gateway's drift monitor said during the live stage, for
the device replayed with a drifting sensor and for every other device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_lstm.reporting.markdown import markdown_table, num
from edge_lstm.reporting.sensor_time import SECONDS, TimeUnit


@dataclass
class DriftSeen:
    """The drift topic's recordings: events (raised/cleared) and the periodic summaries."""

    events: list[dict[str, Any]]
    summaries: list[dict[str, Any]]

    @classmethod
    def split(cls, payloads: list[dict[str, Any]]) -> DriftSeen:
        events = [p for p in payloads if isinstance(p, dict) and {"event", "device_id"} <= p.keys()]
        summaries = [p for p in payloads if isinstance(p, dict) and "top" in p]
        return cls(events, summaries)

    def raised(self, device_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["device_id"] == device_id and e["event"] == "raised"]


EVENT_HEADER = [
    "device",
    "run class",
    "event",
    "wall s after replay start",
    "worst feature",
    "shift",
    "PSI",
    "alert_id",
]


def _event_row(e: dict[str, Any], started: float, run_class: dict[str, str]) -> list[str]:
    return [
        e["device_id"],
        run_class.get(e["device_id"], "injected drift"),
        e["event"],
        num(e["published_at"] - started, ".1f"),
        e["feature"],
        num(e["value"], ".1f"),
        num((e.get("psi") or {}).get(e["feature"]), ".2f"),
        e["alert_id"],
    ]


def _sensor_time(wall_s: float, speedup: float | None, unit: TimeUnit) -> str:
    """' (about 40.0 s of sensor time at 5×)': wall seconds of a replay at `speedup` in the
    data's own time; nothing without a speedup."""
    if not speedup:
        return ""
    return f" (about {unit.text(wall_s * speedup, '.0f')} of sensor time at {speedup:g}×)"


def drift_section(
    drifting: dict[str, Any] | None,
    seen: DriftSeen,
    started: float,
    run_class: dict[str, str],
    *,
    normal: str = "normal",
    speedup: float | None = None,
    unit: TimeUnit = SECONDS,
) -> list[str]:
    """Section 4b: the drifting device's events, the other devices' events (with each run's
    true class, `run_class`; `normal` is the no-fault class), the fleet's confidence and class
    mix against validation at the end of the replay. Event times are wall-clock seconds after
    the replay began (`started`); with the replay's `speedup` the drifting device's is also
    given in sensor time, in `unit`."""
    if drifting is None and not seen.events and not seen.summaries:
        return []
    lines = ["## 4b. Drift monitor", ""]
    if drifting is not None:
        raised = seen.raised(drifting["device_id"])
        after = raised[0]["published_at"] - started if raised else 0.0
        verdict = (
            f"raised a drift event on `{raised[0]['feature']}` (mean shift "
            f"{raised[0]['value']:.1f} training spreads) "
            f"{after:.1f} s after the replay began{_sensor_time(after, speedup, unit)}"
            if raised
            else "raised **no** drift event"
        )
        lines += [
            f"One extra device, `{drifting['device_id']}`, replayed the normal test run "
            f"`{drifting['run_id']}` with `{drifting['feature']}` creeping "
            f"{drifting['sigmas']:g} training standard deviations off over the first part of "
            f"the run (its windows are left out of every score above). The gateway {verdict}.",
            "",
        ]
    others = [e for e in seen.events if drifting is None or e["device_id"] != drifting["device_id"]]
    others_raised = sorted({e["device_id"] for e in others if e["event"] == "raised"})
    normal_raised = [d for d in others_raised if run_class.get(d) == normal]
    listed = ", ".join(f"`{d}` ({run_class.get(d, '?')})" for d in others_raised)
    lines.append(
        f"Other devices with a drift event: {len(others_raised)}"
        + (f" ({listed})" if others_raised else "")
        + f", of which {len(normal_raised)} on a {normal} run. A fault that moves a sensor (stuck, "
        "drifting) is input drift too. The decision is the largest feature mean shift against "
        "the spread of the training runs' block means (runtime/drift.py); PSI against the "
        "training split is shown beside it."
    )
    if seen.events:
        lines += [
            "",
            markdown_table(
                EVENT_HEADER,
                [_event_row(e, started, run_class) for e in seen.events],
            ),
        ]
    if seen.summaries:
        last = seen.summaries[-1]
        confidence, classes = last.get("confidence") or {}, last.get("classes") or {}
        lines += [
            "",
            f"At the last summary: {last['drifting']} of {last['judged']} judged devices "
            f"drifting; the fleet's confidence PSI against validation "
            f"{num(confidence.get('psi'), '.2f')}, class-mix PSI {num(classes.get('psi'), '.2f')} "
            "(shown, never alerted: faults move them too).",
        ]
    lines.append("")
    return lines
