"""Alerts and window results: the messages a closed window turns into, and their ids.

Every alert carries an `alert_id` derived from gateway, device, event, class and window end, so
a consumer de-duplicates the outbox's at-least-once redeliveries, and the same event after a
restart keeps its id. An alert goes to the outbox in one transaction with the device's
debouncer state after it, so a kill can never separate the two. The loop wraps a round's
windows in `round()`: all of its alerts share that one transaction (one commit per round), and
`on_alert` (the feedback store) hears of them only once they are committed.

Bodies are written by `runtime.jsonout.dumps` (orjson), the gateway's one JSON writer.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runtime.config import GatewayConfig
from runtime.debounce import Debouncer, Event
from runtime.jsonout import dumps
from runtime.manifest import Manifest
from runtime.mqtt import MqttLink
from runtime.outbox import Outbox
from runtime.stats import Stats
from runtime.streams import WindowResult

log = logging.getLogger(__name__)

ALERT_ID_NAMESPACE = uuid.UUID("6f1c1a52-2b1e-4b57-9a3e-0c6d1f0e7a41")
LIVE_TS_S = 3_600.0  # a window end older than this is a recorded timestamp, not a live one


def alert_id(gateway_id: str, device_id: str, kind: str, fault: str, window_end_ts: float) -> str:
    """The same id for the same event on every redelivery and after a restart."""
    key = f"{gateway_id}\0{device_id}\0{kind}\0{fault}\0{window_end_ts!r}"
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, key))


class AlertPublisher:
    """Publishes window results (emit: all) and writes debounced alerts to the outbox."""

    def __init__(
        self,
        cfg: GatewayConfig,
        link: MqttLink,
        outbox: Outbox,
        stats: Stats,
        on_alert: Callable[[dict[str, Any]], None] | None = None,  # after the outbox has it
    ) -> None:
        self.cfg, self.link, self.outbox, self.stats = cfg, link, outbox, stats
        self.on_alert = on_alert
        self._committing: list[dict[str, Any]] | None = None  # alerts of the open round

    @contextmanager
    def round(self) -> Iterator[None]:
        """The alerts of one processing round: one outbox transaction, committed when the block
        ends (publish and AMQP acks come after it, runtime/outbox.py `batch`); `on_alert` runs
        for each alert after the commit."""
        if self._committing is not None:  # nested: the outer round commits
            yield
            return
        self._committing = []
        try:
            with self.outbox.batch():
                yield
            committed = self._committing
        finally:
            self._committing = None
        if self.on_alert is not None:
            for body in committed:
                self.on_alert(body)

    def topic(self, device_id: str) -> str:
        return self.cfg.topic(self.cfg.topics.alerts, device_id)

    def on_window(self, result: WindowResult, manifest: Manifest, debouncer: Debouncer) -> None:
        """Publishes a window's result (emit: all) and the alert its vote completes, if any."""
        now = time.monotonic()
        stats = self.stats
        stats.observe("receive_to_infer", result.infer_start - result.received)
        stats.observe("infer", result.infer_end - result.infer_start)
        top = int(result.probs.argmax())
        latency = {
            "receive_to_infer": round((result.infer_start - result.received) * 1000, 3),
            "infer": round((result.infer_end - result.infer_start) * 1000, 3),
            "receive_to_result": round((now - result.received) * 1000, 3),
        }
        if self.cfg.debounce.emit == "all":
            body = self._message(manifest, "window", result, top, float(result.probs[top]))
            body["latency_ms"] = latency
            body["probs"] = [round(float(p), 7) for p in result.probs]
            topic = self.topic(result.device_id)
            qos = self.cfg.debounce.results_qos
            if self.link.publish(topic, dumps(body), qos=qos) is None:
                stats.count("dropped_window_results")
        event = debouncer.update(result.device_id, result.probs)
        if event is not None:
            self._emit_event(result, event, latency, manifest, debouncer.active(result.device_id))
        stats.observe("publish", time.monotonic() - now)

    def _emit_event(
        self, result: WindowResult, event: Event, latency: dict, manifest: Manifest, active: int
    ) -> None:
        """Stores the alert with the device's debouncer state after it (one transaction)."""
        classes = manifest.classes
        body = self._message(manifest, event.kind, result, event.class_index, event.confidence)
        body["latency_ms"] = latency
        body["alert_id"] = alert_id(
            self.cfg.gateway_id, result.device_id, event.kind, body["class"], result.end_ts
        )
        if event.previous:
            body["replaces"] = classes[event.previous]
        self.outbox.add(
            self.topic(result.device_id),
            dumps(body),
            result.device_id,
            active,
        )
        if self._committing is not None:
            self._committing.append(body)  # on_alert once the round is committed
        elif self.on_alert is not None:
            self.on_alert(body)
        self.stats.count("alerts" if event.kind == "raised" else "clears")
        age = time.time() - result.end_ts
        if 0.0 <= age <= LIVE_TS_S:  # recorded timestamps (a replay) say nothing about latency
            self.stats.observe("reading_to_alert", age)
        log.info(
            "%s %s on %s (confidence %.2f)",
            event.kind,
            classes[event.class_index],
            result.device_id,
            event.confidence,
        )

    def _message(
        self, m: Manifest, kind: str, result: WindowResult, index: int, confidence: float
    ) -> dict[str, Any]:
        return {
            "event": kind,
            "device_id": result.device_id,
            "class": m.classes[index],
            "class_index": index,
            "confidence": round(confidence, 6),
            "window_start_ts": result.start_ts,
            "window_end_ts": result.end_ts,
            "model": m.model_name,
            "model_version": m.model_version,
            "gateway_id": self.cfg.gateway_id,
            "published_at": time.time(),
        }
