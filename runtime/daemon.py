"""The serving loop: MQTT readings → batched streaming steps → debounced alerts, stats, status.

Threads: paho's network thread only parses and appends to a bounded deque (`_on_payload`); the
processing loop (the main thread, so signals land there) drains it into the stream engine,
runs one batched step per round, debounces, writes alerts to the outbox and hands them to paho.
SIGTERM/SIGINT drain and exit within ~1 s; SIGHUP reloads the deployment folder in a side
thread and swaps it in between two rounds.
"""

from __future__ import annotations

import collections
import json
import logging
import signal
import threading
import time
from typing import Any

from runtime.config import GatewayConfig
from runtime.debounce import Debouncer, Event
from runtime.errors import ConfigError, EdgeRuntimeError
from runtime.model import LoadedModel, load_model
from runtime.mqtt import MqttLink
from runtime.outbox import Outbox
from runtime.parse import Parser, Reason
from runtime.ratelimit import RateLimitedLog
from runtime.sdnotify import Notifier
from runtime.stats import Stats, log_line, start_prometheus
from runtime.streams import StreamEngine, WindowResult, compatible

log = logging.getLogger(__name__)

DRAIN_BUDGET_S = 0.5  # of the 2 s a SIGTERM may take: finishing queued readings
ACK_WAIT_S = 0.2  # then waiting for PUBACKs of the last alerts (the outbox keeps the rest)
IDLE_WAIT_S = 0.05  # longest sleep of an idle loop (bounds signal and stats latency)


class Service:
    """One gateway: a loaded model, the MQTT link, the outbox and the processing loop."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.bad_input_log = RateLimitedLog(log, cfg.log_every_s)
        self.model = load_model(cfg.model_dir, cfg.backend, cfg.artifact, cfg.threads)
        self.max_gap_s = self._max_gap(self.model)
        self.parser = Parser(self.model.manifest.features, cfg.max_payload_bytes)
        self.engine = self._new_engine(self.model)
        self.debouncer = Debouncer(cfg.debounce.k, cfg.debounce.threshold)
        self.outbox = Outbox(
            cfg.state_dir,
            cfg.outbox.max_rows,
            cfg.outbox.overflow,
            cfg.outbox.max_inflight,
            self.stats.count,
        )
        self.inbox: collections.deque = collections.deque()
        self.wakeup = threading.Event()
        self.link = MqttLink(cfg, self._on_payload, on_ack=self.wakeup.set)
        self.notifier = Notifier()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self._reload_thread: threading.Thread | None = None
        self._reloaded: LoadedModel | EdgeRuntimeError | None = None

    # ---- set-up -------------------------------------------------------------------------

    def _max_gap(self, model: LoadedModel) -> float:
        if self.cfg.max_gap_s is not None:
            return self.cfg.max_gap_s
        period = model.manifest.sample_period_s
        if not period:
            raise ConfigError(
                f"{self.cfg.source}: max_gap_s: the manifest has no sample_period_s; "
                "set max_gap_s (seconds between readings that resets a device's windows)"
            )
        return 5.0 * period

    def _new_engine(self, model: LoadedModel) -> StreamEngine:
        return StreamEngine(
            model.manifest,
            max_gap_s=self.max_gap_s,
            device_queue=self.cfg.batching.device_queue,
            max_batch=self.cfg.batching.max_batch,
            count=self.stats.count,
        )

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def request_stop(self) -> None:
        self.stop_requested.set()
        self.wakeup.set()

    def request_reload(self) -> None:
        self.reload_requested.set()
        self.wakeup.set()

    # ---- network thread -----------------------------------------------------------------

    def _on_payload(self, device_id: str, payload: bytes, received: float) -> None:
        """Parse and enqueue only: this runs on paho's network thread."""
        self.stats.count("messages")
        parsed = self.parser.parse(payload)
        if isinstance(parsed, Reason):
            self.stats.count(parsed.counter)
            self.bad_input_log.warning(
                parsed.value, "dropped a message from %s: %s", device_id, parsed.value
            )
            return
        if len(self.inbox) >= self.cfg.batching.queue_size:
            self.stats.count(Reason.QUEUE_FULL.counter, len(parsed))
            self.bad_input_log.warning("queue_full", "input queue full; dropping readings")
            return
        self.inbox.append((device_id, parsed, received))
        if not self.wakeup.is_set():
            self.wakeup.set()

    # ---- processing loop ----------------------------------------------------------------

    def run(self) -> int:
        """Serves until SIGTERM/SIGINT; returns the process exit code (0)."""
        if self.cfg.prometheus_port is not None:
            start_prometheus(self.stats, self.cfg.prometheus_port)
            log.info("prometheus metrics on http://127.0.0.1:%d/metrics", self.cfg.prometheus_port)
        self.link.start()
        self.notifier.ready(f"serving {self.model.label}")
        log.info(
            "serving %s on %s (gateway %s)",
            self.model.label,
            self.cfg.topics.sensors,
            self.cfg.gateway_id,
        )
        next_stats = time.monotonic() + self.cfg.stats_interval_s
        while not self.stop_requested.is_set():
            self.notifier.watchdog()
            self._maybe_swap_model()
            self.wakeup.clear()  # before draining, so a reading queued after it wakes us
            self._drain_inbox()
            if self.engine.pending_readings:
                self._fill_batch()
                self._round()
            else:
                self._settle_acks()
                self.wakeup.wait(min(IDLE_WAIT_S, max(next_stats - time.monotonic(), 0)))
            if time.monotonic() >= next_stats:
                self._publish_stats()
                next_stats = time.monotonic() + self.cfg.stats_interval_s
        self._shutdown()
        return 0

    def _drain_inbox(self) -> None:
        inbox, engine = self.inbox, self.engine
        n = 0
        while inbox:
            device_id, readings, received = inbox.popleft()
            engine.add(device_id, readings, received)
            n += len(readings)
        if n:
            self.stats.count("readings", n)
        self.stats.gauge("queue", engine.pending_readings)

    def _fill_batch(self) -> None:
        """Sleeps max_wait_ms once before a round that would be small, so readings arriving
        together share one step call. Without it every message wakes this thread, which takes
        the GIL from paho's network thread for a tiny round (the benchmark saw rounds of ~5
        readings from 100 flooding devices). Skipped when a backlog already fills rounds."""
        wait_s = self.cfg.batching.max_wait_ms / 1000.0
        engine = self.engine
        backlog = engine.pending_readings > len(engine.ready)
        if wait_s > 0 and not backlog and len(engine.ready) < self.cfg.batching.max_batch:
            time.sleep(wait_s)
            self._drain_inbox()

    def _round(self) -> None:
        results, rows = self.engine.step_round(self.model.backend)
        n = len(results)
        self.stats.count("steps", rows)
        self.stats.count("batches")
        if not rows:
            return
        for result in results:
            self._on_window(result)
        if n:
            self.stats.count("windows", n)
        self._settle_acks()

    def _settle_acks(self) -> None:
        acks = self.link.acks
        while acks:
            waited = self.outbox.acked(acks.popleft())
            if waited is not None:
                self.stats.observe("ack", waited)
        self.outbox.pump(self.link.publish)
        self.stats.gauge("outbox_unacked", self.outbox.unacked)

    def _on_window(self, result: WindowResult) -> None:
        now = time.monotonic()
        stats = self.stats
        stats.observe("receive_to_infer", result.infer_start - result.received)
        stats.observe("infer", result.infer_end - result.infer_start)
        manifest = self.model.manifest
        top = int(result.probs.argmax())
        latency = {
            "receive_to_infer": round((result.infer_start - result.received) * 1000, 3),
            "infer": round((result.infer_end - result.infer_start) * 1000, 3),
            "receive_to_result": round((now - result.received) * 1000, 3),
        }
        if self.cfg.debounce.emit == "all":
            body = self._message("window", result, top, float(result.probs[top]), latency)
            body["probs"] = [round(float(p), 7) for p in result.probs]
            topic = self._alert_topic(result.device_id)
            qos = self.cfg.debounce.results_qos
            if self.link.publish(topic, json.dumps(body).encode(), qos=qos) is None:
                stats.count("dropped_window_results")
        event = self.debouncer.update(result.device_id, result.probs)
        if event is not None:
            self._emit_event(result, event, latency, manifest.classes)
        stats.observe("publish", time.monotonic() - now)

    def _emit_event(
        self, result: WindowResult, event: Event, latency: dict, classes: list[str]
    ) -> None:
        body = self._message(event.kind, result, event.class_index, event.confidence, latency)
        if event.previous:
            body["replaces"] = classes[event.previous]
        self.outbox.add(self._alert_topic(result.device_id), json.dumps(body).encode())
        self.stats.count("alerts" if event.kind == "raised" else "clears")
        self.stats.observe("reading_to_alert", max(time.time() - result.end_ts, 0.0))
        log.info(
            "%s %s on %s (confidence %.2f)",
            event.kind,
            classes[event.class_index],
            result.device_id,
            event.confidence,
        )

    def _message(
        self, kind: str, result: WindowResult, index: int, confidence: float, latency: dict
    ) -> dict[str, Any]:
        m = self.model.manifest
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
            "latency_ms": latency,
        }

    def _alert_topic(self, device_id: str) -> str:
        return self.cfg.topic(self.cfg.topics.alerts, device_id)

    def _publish_stats(self) -> dict[str, Any]:
        self.stats.gauge("open_windows", self.engine.open_windows)
        self.stats.gauge("devices", len(self.engine.devices))
        snap = self.stats.snapshot()
        snap["model"] = self.model.label
        snap["connected"] = self.link.connected.is_set()
        self.link.publish(self.cfg.topic(self.cfg.topics.stats), json.dumps(snap).encode(), qos=0)
        log.info("stats: %s", log_line(snap))
        self.notifier.status(log_line(snap))
        return snap

    # ---- reload (SIGHUP) ----------------------------------------------------------------

    def _maybe_swap_model(self) -> None:
        if self.reload_requested.is_set() and self._reload_thread is None:
            self.reload_requested.clear()
            self.notifier.reloading()
            self._reload_thread = threading.Thread(
                target=self._load_in_background, name="edgelstm-reload", daemon=True
            )
            self._reload_thread.start()
        if self._reload_thread is None or self._reload_thread.is_alive():
            return
        self._reload_thread = None
        loaded, self._reloaded = self._reloaded, None
        if isinstance(loaded, EdgeRuntimeError):
            log.error("reload failed, still serving %s: %s", self.model.label, loaded)
            self.stats.count("reload_failures")
        elif loaded is not None:
            self._swap(loaded)
        self.notifier.ready(f"serving {self.model.label}")

    def _load_in_background(self) -> None:
        cfg = self.cfg
        try:
            self._reloaded = load_model(cfg.model_dir, cfg.backend, cfg.artifact, cfg.threads)
        except EdgeRuntimeError as exc:
            self._reloaded = exc

    def _swap(self, new: LoadedModel) -> None:
        """Switches models between two rounds; keeps open windows when the state shapes match."""
        old = self.model
        if compatible(old.manifest, new.manifest):
            self.engine.set_normalization(new.manifest)
            kept = f"kept the state of {self.engine.open_windows} open windows"
        else:
            fresh = self._new_engine(new)
            moved = (
                self.engine.move_pending(fresh)
                if new.manifest.features == (old.manifest.features)
                else 0
            )
            dropped = self.engine.pending_readings
            if dropped:
                self.stats.count("dropped_reload", dropped)
            self.engine = fresh
            kept = (
                f"reset all windows (state shapes or windowing changed); moved {moved} "
                f"queued readings, dropped {dropped}"
            )
        if new.manifest.classes != old.manifest.classes:
            self.debouncer = Debouncer(self.cfg.debounce.k, self.cfg.debounce.threshold)
        self.parser = Parser(new.manifest.features, self.cfg.max_payload_bytes)
        self.model = new
        self.stats.count("reloads")
        log.info("reloaded: now serving %s; %s", new.label, kept)

    # ---- shutdown -----------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Finishes queued readings (bounded), waits briefly for acks, says offline."""
        self.notifier.stopping()
        deadline = time.monotonic() + DRAIN_BUDGET_S
        self._drain_inbox()
        while self.engine.pending_readings and time.monotonic() < deadline:
            self._round()
            self._drain_inbox()
        if self.engine.pending_readings:
            self.stats.count("dropped_shutdown", self.engine.pending_readings)
        deadline = time.monotonic() + ACK_WAIT_S
        while self.outbox.unacked and self.link.connected.is_set():
            self._settle_acks()
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        snap = self._publish_stats()
        self.link.stop()
        self.outbox.close()
        self.notifier.close()
        log.info(
            "stopped: %d readings, %d windows, %d alerts; %d alerts left in the outbox",
            snap["counters"].get("readings", 0),
            snap["counters"].get("windows", 0),
            snap["counters"].get("alerts", 0),
            self.outbox.rows,
        )


def serve(cfg: GatewayConfig) -> int:
    """Runs a gateway until SIGTERM/SIGINT (the `edgelstm serve` entry point)."""
    service = Service(cfg)
    service.install_signal_handlers()
    return service.run()
