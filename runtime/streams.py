"""Exact streaming windows: per-device open windows, each with its own recurrent state.

Semantics (docs/ARCHITECTURE.md, "Streaming semantics"): a device's readings are numbered from
its last reset; reading n opens a new window when n % hop == 0; every reading advances every
open window of its device by one step; a window that has taken W steps is closed and yields
softmax probabilities, identical to the window graph on the same W readings. So at most
ceil(W/hop) windows are open per device.

Every published window is made of W consecutive readings. A timestamp step of more than
(1 + gap_tolerance) sample periods means readings went missing: they are counted
(`missing_readings`, or `device_outages` when more than a window's worth is gone) and the
device's windows restart at the reading after the gap. An out-of-order timestamp restarts them
too; the same timestamp again is a counted duplicate (QoS 1 redelivers).

Memory is bounded: at most `max_devices` devices have state. A device may be evicted once it
has been silent for `device_idle_s`, or for `new_device_idle_s` while it has not completed a
window yet (a one-off or throwaway id). At the cap a new device evicts such a device among the
least recently seen ones; when there is none its readings are refused (counted), so a flood of
new ids never disturbs the devices that are streaming.

All devices' pending readings are advanced in one backend call per round (rows = (device,
window) pairs); a device contributes at most one reading per round so its own readings stay in
order. Recurrent states live in one preallocated pool per state tensor, [L, capacity, H]; a
window owns a slot, and a round gathers and scatters the slots with one fancy index each.

A round whose backend call fails steps nothing: its readings are dropped, counted
`dropped_backend_error`, and the windows of its devices restart at their next reading (their
states did not advance, so continuing them would publish windows with a reading missing); the
call's error is raised as BackendError for the caller to log. Other devices are not touched.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.backends.base import StepBackend
from runtime.errors import BackendError
from runtime.manifest import Manifest
from runtime.parse import Readings, Reason

EVICTION_SCAN = 16  # least recently seen devices looked at for one to evict at the cap
_POOL_CAPACITY = 256  # state slots allocated at start; the pool doubles when they run out


@dataclass
class WindowResult:
    """A closed window: its device, first/last reading ts and the class probabilities."""

    device_id: str
    start_ts: float
    end_ts: float
    probs: np.ndarray  # [C]
    received: float  # time.monotonic() when the closing reading arrived
    infer_start: float
    infer_end: float


@dataclass
class _Device:
    """A device's queue and open windows. Windows open at every hop-th reading since the last
    reset, so a window's step count is never stored: the one opened at reading n - W closes
    when reading n arrives, and it is always the oldest (`slots[0]`)."""

    last_seen: float  # time.monotonic() of the newest message
    pending: collections.deque = field(default_factory=collections.deque)
    slots: list[int] = field(default_factory=list)  # open windows' state slots, oldest first
    starts: list[float] = field(default_factory=list)  # their first readings' ts
    n: int = 0  # readings since the last reset
    last_ts: float | None = None
    missing: int = 0  # readings lost in gaps, since the device was first seen
    proven: bool = False  # has completed a window


class _StatePool:
    """Recurrent states of every open window, one slot each, grown by doubling."""

    def __init__(self, shapes: tuple[tuple[int, int, int], ...]) -> None:
        """`shapes`: each state tensor's shape at the first capacity (axis 1 is the slot)."""
        self.arrays = [np.zeros(shape, np.float32) for shape in shapes]
        capacity = shapes[0][1]
        self.free = list(range(capacity - 1, -1, -1))

    def take(self) -> int:
        if not self.free:
            old = self.arrays[0].shape[1]
            self.arrays = [np.concatenate([a, np.zeros_like(a)], axis=1) for a in self.arrays]
            self.free = list(range(2 * old - 1, old - 1, -1))
        slot = self.free.pop()
        for a in self.arrays:
            a[:, slot, :] = 0.0
        return slot

    def give(self, slot: int) -> None:
        self.free.append(slot)

    @property
    def in_use(self) -> int:
        return self.arrays[0].shape[1] - len(self.free)


def compatible(a: Manifest, b: Manifest) -> bool:
    """True when b's step graph can continue a's open windows (same features and state shapes)."""
    keys = ("features", "window", "hop", "cell", "layers", "hidden_size", "stats_width")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


class StreamEngine:
    """Owns every device's windows and turns queued readings into closed windows."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        sample_period_s: float,
        device_queue: int,
        max_batch: int,
        count: Callable[[str, int], None],
        gap_tolerance: float = 0.5,
        max_devices: int = 10_000,
        device_idle_s: float = 600.0,
        new_device_idle_s: float = 5.0,
        on_evict: Callable[[str], None] = lambda device_id: None,
    ) -> None:
        self.window = manifest.window
        self.hop = manifest.hop
        self.period_s = sample_period_s
        self.max_step_s = sample_period_s * (1.0 + gap_tolerance)
        self.device_queue = device_queue
        self.max_batch = max(max_batch, manifest.max_open_windows)
        self.count = count
        self.max_devices = max_devices
        self.device_idle_s = device_idle_s
        self.new_device_idle_s = new_device_idle_s
        self.on_evict = on_evict
        self.mean = np.asarray(manifest.norm_mean, dtype=np.float32)
        self.std = np.asarray(manifest.norm_std, dtype=np.float32)
        self.probabilities = manifest.probabilities  # softmax(logits / the folder's temperature)
        self.pool = _StatePool(manifest.state_shapes(_POOL_CAPACITY))
        # least recently seen first: a message moves its device to the end
        self.devices: collections.OrderedDict[str, _Device] = collections.OrderedDict()
        self.ready: collections.deque[str] = collections.deque()  # devices with pending readings
        self.pending_readings = 0
        self.newest_received: float | None = None  # arrival of the newest reading stepped

    @property
    def open_windows(self) -> int:
        return self.pool.in_use

    def add(self, device_id: str, readings: Readings, received: float) -> None:
        """Queues a message's readings for its device (dropping, counted, past the bounds)."""
        dev = self.devices.get(device_id)
        if dev is None:
            if len(self.devices) >= self.max_devices and not self._evict_stalest(received):
                self.count(Reason.DEVICE_LIMIT.counter, len(readings))
                return
            dev = self.devices[device_id] = _Device(received)
        else:
            dev.last_seen = received
            self.devices.move_to_end(device_id)
        room = self.device_queue - len(dev.pending)
        n = len(readings)
        if n > room:
            self.count(Reason.DEVICE_QUEUE_FULL.counter, n - max(room, 0))
            n = max(room, 0)
        if n == 0:
            return
        if not dev.pending:
            self.ready.append(device_id)
        for i in range(n):
            dev.pending.append((float(readings.ts[i]), readings.values[i], received))
        self.pending_readings += n

    def move_pending(self, other: StreamEngine) -> int:
        """Hands every queued, not yet stepped reading to `other` (a reload that resets state)."""
        moved = 0
        for device_id in self.ready:
            dev = self.devices[device_id]
            for ts, raw, received in dev.pending:
                other.add(device_id, Readings(np.array([ts]), raw[None, :]), received)
            moved += len(dev.pending)
            self.pending_readings -= len(dev.pending)
            dev.pending.clear()
        self.ready.clear()
        return moved

    def evict_idle(self, now: float) -> int:
        """Forgets every device that may be evicted (memory of ids that went quiet)."""
        idle = [d for d, dev in self.devices.items() if self._evictable(dev, now)]
        for device_id in idle:
            self._evict(device_id)
        return len(idle)

    def _evict_stalest(self, now: float) -> bool:
        """Evicts one evictable device among the least recently seen; False when none may go."""
        for device_id, dev in itertools.islice(self.devices.items(), EVICTION_SCAN):
            if self._evictable(dev, now):
                self._evict(device_id)
                return True
        return False

    def _evictable(self, dev: _Device, now: float) -> bool:
        limit = self.device_idle_s if dev.proven else self.new_device_idle_s
        return not dev.pending and now - dev.last_seen >= limit

    def _evict(self, device_id: str) -> None:
        self._reset(self.devices.pop(device_id))
        self.count("evicted_devices", 1)
        self.on_evict(device_id)

    def most_missing(self, n: int) -> dict[str, int]:
        """The n devices that lost the most readings (for the stats message)."""
        lossy = [(dev.missing, device_id) for device_id, dev in self.devices.items() if dev.missing]
        return {device_id: missing for missing, device_id in sorted(lossy, reverse=True)[:n]}

    def _reset(self, dev: _Device) -> None:
        for slot in dev.slots:
            self.pool.give(slot)
        dev.slots.clear()
        dev.starts.clear()
        dev.n = 0

    def _gap(self, dev: _Device, step_s: float) -> None:
        """Counts the readings a gap lost and restarts the device's windows."""
        lost = max(round(step_s / self.period_s) - 1, 1)
        if lost <= self.window:
            dev.missing += lost
            self.count("missing_readings", lost)
        else:
            self.count("device_outages", 1)
        self.count(Reason.GAP.counter, 1)
        self._reset(dev)

    def step_round(self, backend: StepBackend) -> tuple[list[WindowResult], int]:
        """Advances up to max_batch rows by one reading each; returns closed windows and rows.

        Per reading only list operations run in Python (its rows are its device's slot list,
        appended whole); normalization, the row gather and the state gather/scatter are one
        numpy call each for the whole round."""
        slots: list[int] = []  # the round's rows: every stepped reading's open windows
        widths: list[int] = []  # rows per stepped reading
        values: list[np.ndarray] = []
        taken: list[tuple[str, _Device, float, float]] = []
        closing: list[tuple[int, int]] = []  # (reading in `taken`, its first row)
        budget = self.max_batch
        ready, devices, hop, window = self.ready, self.devices, self.hop, self.window
        for _ in range(len(ready)):
            device_id = ready[0]
            dev = devices[device_id]
            need = len(dev.slots) + (1 if dev.n % hop == 0 else 0)
            if need > budget and slots:
                break
            ready.popleft()
            ts, raw, received = dev.pending.popleft()
            self.pending_readings -= 1
            if dev.pending:
                ready.append(device_id)
            if ts == dev.last_ts:
                self.count(Reason.DUPLICATE.counter, 1)
                continue
            if dev.last_ts is not None:
                if ts < dev.last_ts:
                    self.count(Reason.OUT_OF_ORDER.counter, 1)
                    self._reset(dev)
                elif ts - dev.last_ts > self.max_step_s:
                    self._gap(dev, ts - dev.last_ts)
            dev.last_ts = ts
            if dev.n % hop == 0:
                dev.slots.append(self.pool.take())
                dev.starts.append(ts)
            dev.n += 1
            opened = dev.n - window  # the reading that opened the window closing now, if any
            if opened >= 0 and opened % hop == 0:
                closing.append((len(taken), len(slots)))
            values.append(raw)
            slots += dev.slots
            widths.append(len(dev.slots))
            taken.append((device_id, dev, ts, received))
            budget -= len(dev.slots)
            if budget <= 0:
                break
        if not slots:
            return [], 0
        self.newest_received = taken[-1][3]
        x_readings = (np.stack(values) - self.mean) / self.std
        x = x_readings[np.repeat(np.arange(len(widths)), widths)]
        idx = np.asarray(slots, dtype=np.intp)
        state = tuple(np.ascontiguousarray(a[:, idx, :]) for a in self.pool.arrays)
        infer_start = time.monotonic()
        try:
            logits, new_state = backend.step(x, state)
        except Exception as exc:
            self._abandon(taken)
            if isinstance(exc, BackendError):
                raise
            raise BackendError(
                f"the backend failed on a round of {len(slots)} rows: {type(exc).__name__}: {exc}"
            ) from exc
        infer_end = time.monotonic()
        for a, s in zip(self.pool.arrays, new_state, strict=True):
            a[:, idx, :] = s
        return self._close(taken, closing, logits, infer_start, infer_end), len(slots)

    def _abandon(self, taken: list) -> None:
        """A failed round: its readings are dropped (counted) and its devices' windows restart."""
        for _device_id, dev, _ts, _received in taken:
            self._reset(dev)
        self.count("dropped_backend_error", len(taken))

    def _close(
        self,
        taken: list[tuple[str, _Device, float, float]],
        closing: list[tuple[int, int]],
        logits: np.ndarray,
        infer_start: float,
        infer_end: float,
    ) -> list[WindowResult]:
        """Emits the windows that reached W steps this round and frees their slots."""
        if not closing:
            return []
        probs = self.probabilities(logits[np.asarray([row for _, row in closing])])
        results = []
        for i, (reading, _row) in enumerate(closing):
            device_id, dev, end_ts, received = taken[reading]
            self.pool.give(dev.slots.pop(0))
            start_ts = dev.starts.pop(0)
            dev.proven = True
            results.append(
                WindowResult(
                    device_id, start_ts, end_ts, probs[i], received, infer_start, infer_end
                )
            )
        return results
