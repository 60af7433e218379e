"""Sensor time in the report's words: the unit its delays are written in and how its data's
reading rate reads, both from the manifest's `sample_period_s` (the median reading period of the
training data), so the text follows the data instead of assuming the pump's 10 Hz.

Fast machine data (a reading every few seconds or faster) has delays of seconds; process data
read once a minute has delays of tens of minutes, which read badly as thousands of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_lstm.reporting.markdown import num

MINUTES_FROM_PERIOD_S = 10.0  # data read this slowly or slower has its delays in minutes


@dataclass(frozen=True)
class TimeUnit:
    """A unit of sensor time: its symbol ("s", "min"), its word and its length in seconds."""

    symbol: str
    word: str
    seconds: float

    def value(self, seconds: float | None, spec: str = ".1f") -> str:
        """`seconds` in this unit with `spec`, without the symbol ('–' for None)."""
        return num(None if seconds is None else seconds / self.seconds, spec)

    def text(self, seconds: float | None, spec: str = ".1f") -> str:
        """`seconds` in this unit with its symbol: '12.5 s', '40.0 min' ('–' for None)."""
        return "–" if seconds is None else f"{self.value(seconds, spec)} {self.symbol}"


SECONDS = TimeUnit("s", "seconds", 1.0)
MINUTES = TimeUnit("min", "minutes", 60.0)


def delay_unit(sample_period_s: float | None) -> TimeUnit:
    """Minutes for data read every MINUTES_FROM_PERIOD_S seconds or slower, else seconds (also
    when the period is unknown: folders exported before the manifest recorded it)."""
    if sample_period_s is not None and sample_period_s >= MINUTES_FROM_PERIOD_S:
        return MINUTES
    return SECONDS


def duration_text(seconds: float) -> str:
    """A short duration as people write it: '0.1 s', '45 s', '1 min', '10 min', '2 h', '90 min'."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


def rate_text(sample_period_s: float | None) -> str:
    """How often the data is read: 'one reading every 0.1 s (10 Hz)', 'one reading every
    1 min'; 'its recorded rate' when the period is unknown."""
    if not sample_period_s:
        return "its recorded rate"
    text = f"one reading every {duration_text(sample_period_s)}"
    if sample_period_s < 1:
        text += f" ({1 / sample_period_s:.3g} Hz)"
    return text
