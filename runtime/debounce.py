"""Per-device alert debouncing: a fault is raised after k agreeing windows and cleared the same way.

A window "votes" for its top class when that class is a fault with confidence >= threshold;
otherwise it votes normal. k consecutive votes for one fault raise it (or switch to it from
another fault); k consecutive normal votes clear an active fault. The normal class itself is
never alerted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMAL = 0


@dataclass
class Event:
    """A change of a device's alert state: kind is "raised" or "cleared"."""

    kind: str
    class_index: int  # the fault raised, or the fault that cleared
    confidence: float  # of the window that completed the k-run
    previous: int = NORMAL  # the fault this one replaces when switching between faults


@dataclass
class _DeviceVotes:
    active: int = NORMAL
    candidate: int = NORMAL
    run: int = 0


class Debouncer:
    """Turns each device's stream of window probabilities into raise/clear events."""

    def __init__(self, k: int, threshold: float) -> None:
        self.k = k
        self.threshold = threshold
        self.devices: dict[str, _DeviceVotes] = {}

    def active(self, device_id: str) -> int:
        """The fault currently raised for a device (0 = none)."""
        votes = self.devices.get(device_id)
        return votes.active if votes else NORMAL

    def update(self, device_id: str, probs: np.ndarray) -> Event | None:
        votes = self.devices.get(device_id)
        if votes is None:
            votes = self.devices[device_id] = _DeviceVotes()
        top = int(np.argmax(probs))
        confidence = float(probs[top])
        vote = top if top != NORMAL and confidence >= self.threshold else NORMAL
        if vote == votes.active:
            votes.candidate, votes.run = vote, 0
            return None
        votes.run = votes.run + 1 if vote == votes.candidate else 1
        votes.candidate = vote
        if votes.run < self.k:
            return None
        previous, votes.active, votes.run = votes.active, vote, 0
        if vote == NORMAL:
            return Event("cleared", previous, confidence)
        return Event("raised", vote, confidence, previous)

    def restore(self, active: dict[str, int]) -> None:
        """Takes back the faults that were raised before a restart (from the state dir)."""
        for device_id, fault in active.items():
            self.devices[device_id] = _DeviceVotes(active=fault)

    def forget(self, device_id: str) -> None:
        """Drops an evicted device's votes; a raised fault is kept so it can still clear."""
        votes = self.devices.get(device_id)
        if votes is not None and votes.active == NORMAL:
            del self.devices[device_id]
        elif votes is not None:
            votes.candidate, votes.run = votes.active, 0
