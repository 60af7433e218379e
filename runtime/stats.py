"""Service statistics: counters per event/reason and latency percentiles per stage.

Counters are bumped from paho's network thread (bad input, queue drops) and the processing
loop; latency samples are kept in bounded ring buffers so memory never grows. A snapshot is
the JSON published on the stats topic, the one log line, and the Prometheus metrics.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

STAGES = ("receive_to_infer", "infer", "publish", "ack", "reading_to_alert")
RING = 8_192  # samples kept per stage: the latest ones, so percentiles are recent
Labelled = tuple[str, tuple[str, ...], list[tuple[tuple, float]]]  # help, labels, samples


class Stats:
    """Thread-safe counters and latency rings; `snapshot()` computes rates since the last one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter()
        self.latency: dict[str, collections.deque] = {
            s: collections.deque(maxlen=RING) for s in STAGES
        }
        self.totals: dict[str, list[float]] = {s: [0, 0.0] for s in STAGES}  # count, sum (s)
        self.gauges: dict[str, float] = {}
        # Prometheus-only gauges, labelled: name -> (help, label names, [(label values, value)]),
        # each replaced whole by its producer (runtime/drift.py, runtime/health.py), whose JSON
        # goes in its own message or section
        self.labelled: dict[str, Labelled] = {}
        self.labelled_counters: dict[str, Labelled] = {}  # the same for counters (feedback)
        self.started = time.monotonic()
        self._last_time = self.started
        self._last_counts: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def observe(self, stage: str, seconds: float) -> None:
        self.latency[stage].append(seconds * 1000.0)
        total = self.totals[stage]
        total[0] += 1
        total[1] += seconds

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def labelled_gauge(
        self, name: str, doc: str, labels: tuple[str, ...], samples: list[tuple[tuple, float]]
    ) -> None:
        """Replaces the samples of the labelled gauge `edgelstm_<name>` (Prometheus only)."""
        self.labelled[name] = (doc, labels, samples)

    def labelled_counter(
        self, name: str, doc: str, labels: tuple[str, ...], samples: list[tuple[tuple, float]]
    ) -> None:
        """Replaces the samples of the labelled counter `edgelstm_<name>_total` (Prometheus
        only; runtime/feedback.py keeps the totals)."""
        self.labelled_counters[name] = (doc, labels, samples)

    def percentiles(self, stage: str) -> dict[str, float] | None:
        samples = np.fromiter(self.latency[stage], dtype=np.float64)
        if samples.size == 0:
            return None
        p50, p95, p99 = np.percentile(samples, [50, 95, 99])
        return {
            "p50": round(float(p50), 4),
            "p95": round(float(p95), 4),
            "p99": round(float(p99), 4),
            "max": round(float(samples.max()), 4),
            "n": int(samples.size),
        }

    def snapshot(self) -> dict[str, Any]:
        """Counters, per-second rates since the previous snapshot, gauges and latency (ms)."""
        now = time.monotonic()
        with self._lock:
            counts = dict(self.counters)
        elapsed = max(now - self._last_time, 1e-9)
        rates = {
            f"{name}_per_s": round(
                (counts.get(name, 0) - self._last_counts.get(name, 0)) / elapsed, 2
            )
            for name in ("readings", "windows", "messages")
        }
        self._last_time, self._last_counts = now, counts
        return {
            "time": time.time(),
            "uptime_s": round(now - self.started, 3),
            "counters": counts,
            "rates": rates,
            "gauges": dict(self.gauges),
            "latency_ms": {s: self.percentiles(s) for s in STAGES},
        }


LOSS_HINT = (
    "the broker or the publishers drop messages; on Mosquitto raise max_queued_messages and set "
    "max_inflight_messages 0 (deploy/README.md, 'Readings lost before the gateway')"
)


class LossWatch:
    """Warns when more than `warn_rate` of the readings since the previous stats message went
    missing (timestamp gaps), naming the broker settings that cause it."""

    def __init__(self, warn_rate: float) -> None:
        self.warn_rate = warn_rate
        self._last = (0, 0)  # readings, missing_readings at the previous stats message

    def warning(self, counters: dict[str, int]) -> str | None:
        readings, missing = counters.get("readings", 0), counters.get("missing_readings", 0)
        new_readings, new_missing = readings - self._last[0], missing - self._last[1]
        self._last = (readings, missing)
        if new_missing <= 0 or new_missing < self.warn_rate * (new_readings + new_missing):
            return None
        share = new_missing / (new_readings + new_missing)
        return f"{share:.1%} of readings went missing since the last stats: {LOSS_HINT}"


def log_line(snap: dict[str, Any]) -> str:
    """The one-line summary logged every stats interval."""
    c, r = snap["counters"], snap["rates"]
    lat = snap["latency_ms"]
    infer = lat["infer"]
    e2e = lat["receive_to_infer"]
    bad = sum(v for k, v in c.items() if k.startswith("invalid_") or k.startswith("dropped_"))
    return (
        f"readings/s={r['readings_per_s']:.0f} windows/s={r['windows_per_s']:.0f} "
        f"alerts={c.get('alerts', 0)} invalid+dropped={bad} "
        f"queue={snap['gauges'].get('queue', 0):.0f} "
        f"infer_p99={infer['p99'] if infer else '-'}ms "
        f"recv_to_infer_p99={e2e['p99'] if e2e else '-'}ms "
        f"outbox={snap['gauges'].get('outbox_unacked', 0):.0f}"
    )


QUANTILES = (0.5, 0.95, 0.99)


def start_prometheus(stats: Stats, port: int, host: str = "127.0.0.1") -> None:
    """Serves the stats on http://host:port/metrics (needs prometheus-client): counters,
    gauges, and each latency stage as a Summary in seconds by the usual convention
    (`{quantile="0.5"}` over the recent samples, `_count` and `_sum` since start), and the
    labelled gauges and counters (drift, backend, feedback). CPU and RSS are prometheus-client's
    own process collector's (`process_cpu_seconds_total`, `process_resident_memory_bytes`).
    Each server has its own registry, so two services in one process (tests) do not collide."""
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    class _Collector:
        def collect(self):
            with stats._lock:
                counts = dict(stats.counters)
            for name, value in counts.items():
                yield CounterMetricFamily(f"edgelstm_{name}", f"count of {name}", value=value)
            for name, value in stats.gauges.items():
                yield GaugeMetricFamily(f"edgelstm_{name}", f"current {name}", value=value)
            for stage in STAGES:
                yield from _latency_families(stats, stage, Metric, GaugeMetricFamily)
            for kind, labelled in (
                (GaugeMetricFamily, stats.labelled),
                (CounterMetricFamily, stats.labelled_counters),
            ):
                for name, (doc, labels, samples) in list(labelled.items()):
                    family = kind(f"edgelstm_{name}", doc, labels=labels)
                    for values, value in samples:
                        family.add_metric(values, value)
                    yield family

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(_Collector())
    start_http_server(port, addr=host, registry=registry)


def _latency_families(stats: Stats, stage: str, metric: type, gauge: type):
    """The Summary of one stage, and its recent maximum as a gauge."""
    name = f"edgelstm_latency_{stage}_seconds"
    summary = metric(name, f"{stage} latency (recent quantiles)", "summary")
    samples = np.fromiter(stats.latency[stage], dtype=np.float64) / 1000.0
    if samples.size:
        for q, value in zip(QUANTILES, np.quantile(samples, QUANTILES), strict=True):
            summary.add_sample(name, {"quantile": str(q)}, float(value))
    count, total = stats.totals[stage]
    summary.add_sample(f"{name}_count", {}, count)
    summary.add_sample(f"{name}_sum", {}, total)
    yield summary
    if samples.size:
        yield gauge(f"{name}_max", f"{stage} latency, recent maximum", value=float(samples.max()))
