"""Debouncing: k agreeing fault windows raise, k normal ones clear, normal is never alerted."""

from __future__ import annotations

import numpy as np

from runtime.debounce import Debouncer


def probs(top: int, confidence: float = 0.9, n: int = 4) -> np.ndarray:
    p = np.full(n, (1 - confidence) / (n - 1))
    p[top] = confidence
    return p


def feed(debouncer: Debouncer, tops: list[int], confidence: float = 0.9) -> list:
    return [debouncer.update("dev", probs(t, confidence)) for t in tops]


def test_raise_after_k_and_clear_after_k() -> None:
    d = Debouncer(k=3, threshold=0.6)
    events = feed(d, [0, 0, 2, 2, 0, 2, 2, 2, 2, 0, 0, 2, 0, 0, 0])
    kinds = [(i, e.kind, e.class_index) for i, e in enumerate(events) if e is not None]
    # the 2,2 run at 2-3 is broken by a normal window, the one at 5-7 raises; 9-10 and 12-14
    # are two normal runs, only the second reaches k
    assert kinds == [(7, "raised", 2), (14, "cleared", 2)]
    assert d.active("dev") == 0


def test_normal_is_never_alerted_and_low_confidence_counts_as_normal() -> None:
    d = Debouncer(k=1, threshold=0.6)
    assert all(e is None for e in feed(d, [0] * 10))
    assert all(e is None for e in feed(d, [3] * 5, confidence=0.5))
    assert feed(d, [3], confidence=0.7)[0].kind == "raised"
    assert feed(d, [3], confidence=0.5)[0].kind == "cleared"


def test_switching_faults_and_devices_are_independent() -> None:
    d = Debouncer(k=2, threshold=0.5)
    feed(d, [1, 1])
    assert d.active("dev") == 1
    events = feed(d, [2, 2])
    assert events[1].kind == "raised" and events[1].class_index == 2 and events[1].previous == 1
    assert d.update("other", probs(2)) is None  # its own count starts at 1
    assert d.active("other") == 0
