"""The drift monitor: do the inputs still look like the training data, the outputs like validation?

Reference: the manifest's `drift_reference` (converters/drift_reference.py), in normalized
units z = (raw - norm_mean) / norm_std: per feature 11 quantile bin edges of the training
readings (12 bins, the outer two open-ended) with the training share of each bin, mean and
variance; and the window graph's top-probability bins and class mix on validation.

Per device, the monitor keeps exponentially weighted bin counts, sums and sums of squares of
its readings' z values (all devices in one pool of arrays, a slot per device). `observe` takes
a drain's messages at once: bins for every value, then one `np.add.at` per statistic over
the flat (device, feature, bin) cells, so no Python runs per value. Every
`drift.interval_s` (`evaluate`) it computes, for every device at once,

    PSI[f] = sum_b (p_b - q_b) * ln(p_b / q_b)

of the device's bin shares p against the training shares q, both floored at `EPS` (so an
empty bin on both sides adds nothing and one empty on one side adds a bounded amount), and
then multiplies every running figure by 0.5 ** (interval_s / half_life_s): readings count with
a weight that halves every `half_life_s`, and a device reading at r Hz is judged on about
r * half_life_s / ln 2 weighted readings. A device with fewer than `min_readings` weighted
readings is not judged.

The decision is on a mean shift, not on PSI: per feature, |device mean - block_mean| /
block_sd, where block_mean and block_sd describe the means of the training runs' blocks of
consecutive readings (converters/drift_reference.py). PSI against the training split's
marginal is large for any single device, which sits at one operating point while the split
spans the fleet: the demo's own training runs score a median largest-feature PSI of 7.8 and
every replayed test device crossed 0.25, so PSI is reported beside the shift, never decided
on. The statistic is the largest feature shift: a device starts drifting once it stays above
`threshold` for `for_s` seconds and stops once it stays below `clear_threshold` for `for_s`
(both checked at each evaluation, so `for_s` is rounded up to whole intervals). A fault that
moves a sensor (a stuck or drifting sensor, overheating) is input drift too and may raise
one. Each change is a `drift` event (`raised` / `cleared`) on
`topics.drift_events`, QoS 1 through the outbox, with an `alert_id` made as the alerts' are
(runtime/alerts.py) with kind "drift". The outbox stores alert state with every row, so a
drift event stores the debouncer's current state of the device, which it leaves as it was.
The state is in memory only: after a restart a device that still drifts raises again once it
has `min_readings` readings and `for_s` has passed.

Memory: about 2.7 KB per device at 24 features (float64 counts of 12 bins, sums, squares),
27 MB at the default limits.max_devices of 10,000; the pool doubles up to that cap, and an
evicted device's slot is reused.

Over the gateway (not per device, for there are few windows per device), the closed windows'
top probability and top class are binned and weighted the same way, and compared with
validation by PSI (`confidence_psi`, `class_psi`). They say whether the model is less sure
than it was, or sees another mix of classes; a real fault also moves them, so they are shown,
never alerted.

Bounded output: the summary on `topics.drift` lists the `top_devices` devices with the largest
shift (drifting ones first), each with its `top_features` features; Prometheus carries
`edgelstm_drift_shift{device, feature}` and `edgelstm_drift_psi{device, feature}` for exactly
those (at most top_devices x top_features series each), `edgelstm_drift_devices`,
`edgelstm_confidence_psi`, `edgelstm_class_psi` and `edgelstm_class_share{class}`. Counters
`drift_raised` and `drift_cleared` are in the stats.

`drift.enabled: false` or a folder without a reference (exported before it) means no monitor:
the daemon's hooks then cost one attribute test per drain and round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.alerts import alert_id
from runtime.config import GatewayConfig
from runtime.jsonout import dumps
from runtime.manifest import Manifest, bin_index
from runtime.mqtt import MqttLink
from runtime.outbox import Outbox
from runtime.stats import Stats
from runtime.streams import WindowResult

log = logging.getLogger(__name__)

EPS = 1e-4  # floor of a bin share in PSI
STATISTIC = "max_mean_shift"  # what the thresholds apply to (the module docstring)
POOL_START = 64  # device slots first allocated (doubled as needed)


def psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Population stability index over the last axis of shares p against reference q."""
    p, q = np.maximum(p, EPS), np.maximum(q, EPS)
    return np.sum((p - q) * np.log(p / q), axis=-1)


@dataclass
class Judgement:
    """One evaluation over the tracked devices: their ids and pool slots, weighted readings,
    scores, each device's largest shift and whether it has enough readings to be judged."""

    ids: list[str]
    slots: np.ndarray
    weights: np.ndarray
    scores: Scores
    worst: np.ndarray
    judged: np.ndarray

    def unpack(self) -> tuple[list[str], np.ndarray, np.ndarray, Scores, np.ndarray, np.ndarray]:
        return self.ids, self.slots, self.weights, self.scores, self.worst, self.judged


@dataclass
class Scores:
    """Per device and feature [D, F] (or one device's [F]): the mean shift the monitor decides
    on, in training block spreads, and the PSI it reports."""

    shift: np.ndarray
    psi: np.ndarray

    def of(self, i: int) -> Scores:
        return Scores(self.shift[i], self.psi[i])


class _Histogram:
    """Exponentially weighted counts over bins of one gateway-wide series (confidence, class)."""

    def __init__(self, reference: Sequence[float]) -> None:
        self.reference = np.asarray(reference, dtype=np.float64)
        self.counts = np.zeros(self.reference.size)

    def add(self, bins: np.ndarray) -> None:
        self.counts += np.bincount(bins, minlength=self.reference.size)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def shares(self) -> np.ndarray:
        return self.counts / max(self.total, 1e-12)

    def psi(self) -> float | None:
        return float(psi(self.shares(), self.reference)) if self.total > 0 else None


class DriftMonitor:
    """Per-device input drift and gateway-wide output drift against the manifest's reference."""

    def __init__(self, cfg: GatewayConfig, manifest: Manifest, stats: Stats) -> None:
        ref = manifest.drift_reference
        assert ref is not None, "the daemon builds a monitor only for a folder with a reference"
        self.cfg, self.drift, self.manifest, self.stats = cfg, cfg.drift, manifest, stats
        self.features = manifest.features
        self.norm_mean = np.asarray(manifest.norm_mean, dtype=np.float64)
        self.norm_std = np.asarray(manifest.norm_std, dtype=np.float64)
        self.edges = np.asarray(ref.edges, dtype=np.float64)  # [F, E]
        self.reference = np.asarray(ref.share, dtype=np.float64)  # [F, B]
        self.ref_mean = np.asarray(ref.mean, dtype=np.float64)
        self.ref_var = np.asarray(ref.var, dtype=np.float64)
        self.block_mean = np.asarray(ref.block_mean, dtype=np.float64)
        self.block_sd = np.asarray(ref.block_sd, dtype=np.float64)
        self.n_bins = self.reference.shape[1]
        self.slots: dict[str, int] = {}
        self.free: list[int] = []
        self._grow(POOL_START)
        self.confidence: _Histogram | None = None
        self.classes: _Histogram | None = None
        if ref.windows:
            self.confidence_edges = np.asarray(ref.confidence_edges, dtype=np.float64)
            self.confidence = _Histogram(ref.confidence_share)
            self.classes = _Histogram(ref.class_share)
        self.decay = 0.5 ** (self.drift.interval_s / self.drift.half_life_s)
        self.next_due = time.monotonic() + self.drift.interval_s

    @staticmethod
    def for_model(cfg: GatewayConfig, manifest: Manifest, stats: Stats) -> DriftMonitor | None:
        """The monitor for a folder, or None (with a note) when it is off or has no reference."""
        if not cfg.drift.enabled:
            return None
        if manifest.drift_reference is None:
            log.info(
                "drift monitor off: the deployment folder has no drift_reference (exported "
                "before edgelstm wrote one); re-export it to monitor input drift"
            )
            return None
        return DriftMonitor(cfg, manifest, stats)

    # ---- per round ------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = len(self.slots) + len(self.free)
        shape = (capacity, len(self.features))
        for name, extra in (("counts", (self.n_bins,)), ("sums", ()), ("squares", ())):
            grown = np.zeros(shape + extra)
            if old:
                grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        weights = np.zeros(capacity)
        since = np.full(capacity, np.nan)  # monotonic time the pending change's condition began
        drifting = np.zeros(capacity, dtype=bool)
        if old:
            weights[:old], since[:old], drifting[:old] = self.weights, self.since, self.drifting
        self.weights, self.since, self.drifting = weights, since, drifting
        self.free.extend(range(capacity - 1, old - 1, -1))

    def _slot(self, device_id: str) -> int:
        slot = self.slots.get(device_id)
        if slot is None:
            if not self.free:  # doubling, but not past limits.max_devices (the engine's cap)
                capacity = len(self.weights)
                self._grow(max(min(2 * capacity, self.cfg.limits.max_devices), capacity + 1))
            slot = self.slots[device_id] = self.free.pop()
        return slot

    def forget(self, device_id: str) -> None:
        """Drops an evicted device's figures (its slot is reused)."""
        slot = self.slots.pop(device_id, None)
        if slot is None:
            return
        self.counts[slot] = self.sums[slot] = self.squares[slot] = 0.0
        self.weights[slot], self.since[slot], self.drifting[slot] = 0.0, np.nan, False
        self.free.append(slot)

    def observe(self, batch: Sequence[tuple[str, np.ndarray]]) -> None:
        """Adds a drain's readings: (device id, raw values [n, F]) per message. One bin pass
        per edge and one unbuffered `np.add.at` per statistic over flat (device, feature,
        bin) cells: measured ~4x cheaper than `np.bincount` over the touched devices' cells
        (bench/drift.py gives the cost per reading)."""
        if not batch:
            return
        slots = np.fromiter((self._slot(d) for d, _ in batch), dtype=np.intp, count=len(batch))
        rows = np.repeat(slots, [len(v) for _, v in batch])
        z = (np.concatenate([v for _, v in batch]) - self.norm_mean) / self.norm_std  # [N, F]
        cell = (rows[:, None] * len(self.features) + np.arange(len(self.features))).ravel()
        bins = cell * self.n_bins + bin_index(z, self.edges).ravel()
        np.add.at(self.counts.reshape(-1), bins, 1.0)
        flat = z.ravel()
        np.add.at(self.sums.reshape(-1), cell, flat)
        np.add.at(self.squares.reshape(-1), cell, flat * flat)
        np.add.at(self.weights, rows, 1.0)

    def observe_windows(self, results: Sequence[WindowResult]) -> None:
        """Adds a round's closed windows to the gateway's confidence and class mix."""
        if not results or self.confidence is None or self.classes is None:
            return
        probs = np.stack([r.probs for r in results])
        self.confidence.add(bin_index(probs.max(axis=1), self.confidence_edges))
        self.classes.add(probs.argmax(axis=1))

    # ---- every interval -------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def evaluate(self, now: float) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """The summary and the drift events (device id, body) of this interval; then decays."""
        self.next_due = now + self.drift.interval_s
        ids = list(self.slots)
        slots = np.fromiter(self.slots.values(), dtype=np.intp, count=len(ids))
        weights = self.weights[slots]
        shares = self.counts[slots] / np.maximum(weights, 1e-12)[:, None, None]
        mean = self.sums[slots] / np.maximum(weights, 1e-12)[:, None]
        scores = Scores(np.abs(mean - self.block_mean) / self.block_sd, psi(shares, self.reference))
        worst = scores.shift.max(axis=1, initial=0.0)
        j = Judgement(ids, slots, weights, scores, worst, weights >= self.drift.min_readings)
        events = self._transitions(j, now)
        summary = self._summary(j)
        for array in (self.counts, self.sums, self.squares, self.weights):
            array *= self.decay
        for histogram in (self.confidence, self.classes):
            if histogram is not None:
                histogram.counts *= self.decay
        return summary, events

    def _transitions(self, j: Judgement, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Starts or stops the clock of each device's pending change; returns due events."""
        ids, slots, weights, scores, worst, judged = j.unpack()
        drifting = self.drifting[slots]
        wants = judged & np.where(
            drifting, worst < self.drift.clear_threshold, worst > self.drift.threshold
        )
        since = self.since[slots]
        since = np.where(wants, np.where(np.isnan(since), now, since), np.nan)
        due = wants & (now - since >= self.drift.for_s)
        self.since[slots] = np.where(due, np.nan, since)
        self.drifting[slots] = drifting ^ due
        events = []
        for i in np.flatnonzero(due):
            kind = "cleared" if drifting[i] else "raised"
            started = time.time() - float(now - since[i])  # a float: alert_id uses its repr
            events.append((ids[i], self._event(ids[i], kind, scores.of(i), weights[i], started)))
        return events

    def _top_features(self, scores: np.ndarray) -> list[int]:
        return [int(f) for f in np.argsort(-scores)[: self.drift.top_features]]

    def _event(
        self, device_id: str, kind: str, scores: Scores, weight: float, started: float
    ) -> dict[str, Any]:
        worst = int(scores.shift.argmax())
        top = self._top_features(scores.shift)
        return {
            "event": kind,
            "kind": "drift",
            "device_id": device_id,
            "statistic": STATISTIC,
            "value": round(float(scores.shift[worst]), 6),
            "feature": self.features[worst],
            "shift": {self.features[f]: round(float(scores.shift[f]), 6) for f in top},
            "psi": {self.features[f]: round(float(scores.psi[f]), 6) for f in top},
            "threshold": self.drift.threshold,
            "clear_threshold": self.drift.clear_threshold,
            "for_s": self.drift.for_s,
            "readings": round(float(weight), 1),
            "since": started,
            "model": self.manifest.model_name,
            "model_version": self.manifest.model_version,
            "gateway_id": self.cfg.gateway_id,
            "published_at": time.time(),
            "alert_id": alert_id(self.cfg.gateway_id, device_id, "drift", kind, started),
        }

    def _summary(self, j: Judgement) -> dict[str, Any]:
        ids, slots, weights, scores, worst, judged = j.unpack()
        drifting = self.drifting[slots]
        order = np.lexsort((-np.where(judged, worst, -1.0), ~drifting))[: self.drift.top_devices]
        mean = self.sums[slots] / np.maximum(weights, 1e-12)[:, None]
        var = np.maximum(self.squares[slots] / np.maximum(weights, 1e-12)[:, None] - mean**2, 0)
        listed = []
        psi_samples, shift_samples = [], []
        for i in order:
            features = self._top_features(scores.shift[i])
            listed.append(
                {
                    "device_id": ids[i],
                    "drifting": bool(drifting[i]),
                    "judged": bool(judged[i]),
                    "max_shift": round(float(worst[i]), 6),
                    "readings": round(float(weights[i]), 1),
                    "features": {
                        self.features[f]: {
                            "shift": round(float(scores.shift[i, f]), 6),
                            "psi": round(float(scores.psi[i, f]), 6),
                            "mean": round(float(mean[i, f]), 4),
                            "var": round(float(var[i, f]), 4),
                            "reference_mean": round(float(self.ref_mean[f]), 4),
                            "reference_var": round(float(self.ref_var[f]), 4),
                        }
                        for f in features
                    },
                }
            )
            for f in features:
                key = (ids[i], self.features[f])
                psi_samples.append((key, float(scores.psi[i, f])))
                shift_samples.append((key, float(scores.shift[i, f])))
        count = int(drifting.sum())
        stats = self.stats
        stats.labelled_gauge(
            "drift_psi",
            "input PSI against training (listed devices)",
            ("device", "feature"),
            psi_samples,
        )
        stats.labelled_gauge(
            "drift_shift",
            "input mean shift in training block spreads (listed devices)",
            ("device", "feature"),
            shift_samples,
        )
        stats.labelled_gauge("drift_devices", "devices drifting now", (), [((), count)])
        return {
            "time": time.time(),
            "gateway_id": self.cfg.gateway_id,
            "model": self.manifest.model_name,
            "model_version": self.manifest.model_version,
            "statistic": STATISTIC,
            "threshold": self.drift.threshold,
            "clear_threshold": self.drift.clear_threshold,
            "devices": len(ids),
            "judged": int(judged.sum()),
            "drifting": count,
            "top": listed,
            "confidence": self._output_summary(self.confidence, "confidence_psi", None),
            "classes": self._output_summary(self.classes, "class_psi", self.manifest.classes),
        }

    def _output_summary(
        self, histogram: _Histogram | None, metric: str, labels: list[str] | None
    ) -> dict[str, Any] | None:
        """One gateway-wide output series: PSI against validation, shares, weighted windows."""
        if histogram is None:
            return None
        value = histogram.psi()
        shares = histogram.shares()
        if value is not None:
            self.stats.labelled_gauge(metric, f"{metric} against validation", (), [((), value)])
        out: dict[str, Any] = {
            "psi": None if value is None else round(value, 6),
            "windows": round(histogram.total, 1),
        }
        if labels is None:
            out["share"] = [round(float(s), 6) for s in shares]
            out["reference_share"] = [round(float(s), 6) for s in histogram.reference]
            return out
        out["share"] = {c: round(float(s), 6) for c, s in zip(labels, shares, strict=True)}
        out["reference_share"] = {
            c: round(float(s), 6) for c, s in zip(labels, histogram.reference, strict=True)
        }
        if value is not None:
            self.stats.labelled_gauge(
                "class_share",
                "share of recent windows by top class",
                ("class",),
                [((c,), float(s)) for c, s in zip(labels, shares, strict=True)],
            )
        return out


def publish(
    monitor: DriftMonitor,
    now: float,
    link: MqttLink,
    outbox: Outbox,
    active: Callable[[str], int],
) -> None:
    """Evaluates the monitor and publishes: the summary on topics.drift (QoS 0) and each event
    on topics.drift_events through the outbox (QoS 1); `active(device_id)` is the debouncer's
    state the outbox row stores unchanged (see the module docstring)."""
    cfg = monitor.cfg
    summary, events = monitor.evaluate(now)
    with outbox.batch():  # one commit for every event of this evaluation
        for device_id, body in events:
            outbox.add(
                cfg.topic(cfg.topics.drift_events, device_id),
                dumps(body),
                device_id,
                active(device_id),
            )
    for device_id, body in events:
        monitor.stats.count(f"drift_{body['event']}")
        log.info(
            "drift %s on %s: %s PSI %.3f", body["event"], device_id, body["feature"], body["value"]
        )
    link.publish(cfg.topic(cfg.topics.drift), dumps(summary), qos=0)
