"""report.md's drift section: what the gateway's drift monitor said during the live stage, for
the device replayed with a drifting sensor and for every other device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_lstm.reporting.markdown import markdown_table, num


@dataclass
class DriftSeen:
    """The drift topic's recordings: events (raised/cleared) and the periodic summaries."""

    events: list[dict[str, Any]]
    summaries: list[dict[str, Any]]

    @classmethod
    def split(cls, payloads: list[dict[str, Any]]) -> DriftSeen:
        events = [p for p in payloads if isinstance(p, dict) and "event" in p]
        summaries = [p for p in payloads if isinstance(p, dict) and "top" in p]
        return cls(events, summaries)

    def raised(self, device_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["device_id"] == device_id and e["event"] == "raised"]


def _event_row(e: dict[str, Any], started: float) -> list[str]:
    return [
        e["device_id"],
        e["event"],
        num(e["published_at"] - started, ".1f"),
        e["feature"],
        num(e["value"], ".2f"),
        e["alert_id"],
    ]


def drift_section(drifting: dict[str, Any] | None, seen: DriftSeen, started: float) -> list[str]:
    """Section 4b: the drifting device's events, the other devices' events, the fleet's
    confidence and class mix against validation at the end of the replay."""
    if drifting is None and not seen.events and not seen.summaries:
        return []
    lines = ["## 4b. Drift monitor", ""]
    if drifting is not None:
        raised = seen.raised(drifting["device_id"])
        verdict = (
            f"raised a drift event on `{raised[0]['feature']}` (PSI {raised[0]['value']:.2f}) "
            f"{raised[0]['published_at'] - started:.1f} s after the replay began"
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
    lines.append(
        f"Other devices with a drift event: {len(others_raised)}"
        + (f" ({', '.join(f'`{d}`' for d in others_raised)})" if others_raised else "")
        + ". A fault moves a device's inputs too, so fault runs may drift as well; the monitor "
        "compares each device's recent readings with the training readings of every class."
    )
    if seen.events:
        lines += [
            "",
            markdown_table(
                ["device", "event", "s after start", "worst feature", "PSI", "alert_id"],
                [_event_row(e, started) for e in seen.events],
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
