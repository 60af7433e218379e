"""The serving loop: MQTT readings → batched streaming steps → debounced alerts, stats, status.

Threads: paho's network thread only validates the device id, parses and appends to a bounded
deque (`_on_payload`); nothing it raises escapes (`_on_handler_error` counts it). The
processing loop (the main thread, so signals land there) drains the deque into the stream
engine, runs one batched step per round, debounces, writes alerts to the outbox and hands them
to paho. It feeds the systemd watchdog only while the network thread makes progress too, and
sends READY=1 after the first CONNACK. SIGTERM/SIGINT drain and exit within ~1 s; SIGHUP
reloads the deployment folder in a side thread and swaps it in between two rounds: every open
window then restarts on the new model, so each result comes from exactly one model; the old
model's backend is closed (its device memory freed) once the new one serves, and the serving
one at shutdown. A TensorRT backend does all its CUDA work on its own thread
(runtime/backends/tensorrt_backend.py), so loading it on the reload thread, stepping it here and
closing it here is safe.

Rounds never exceed the backend's `max_batch` (an engine's optimization profile):
`batching.max_batch` is clamped to it. A round whose backend call fails is logged and counted
(`backend_errors`; its readings `dropped_backend_error`, see runtime/streams.py) and serving
goes on: one bad round never ends the gateway.

The debouncer's raised faults are stored with each alert in the outbox's database
(runtime/alerts.py) and restored at start.

The drift monitor (runtime/drift.py) sees each drain's readings and each round's closed
windows and publishes every drift.interval_s; a monitor that fails is switched off, never the
gateway. The stats message carries the process's `health` (runtime/health.py).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from runtime.alerts import AlertPublisher
from runtime.amqp_input import AmqpInput
from runtime.config import GatewayConfig
from runtime.debounce import Debouncer
from runtime.drift import DriftMonitor
from runtime.drift import publish as publish_drift
from runtime.errors import BackendError, ConfigError, EdgeRuntimeError
from runtime.feedback import Feedback
from runtime.health import Health
from runtime.jsonout import dumps
from runtime.model import LoadedModel, load_model
from runtime.mqtt import MqttLink
from runtime.outbox import Outbox
from runtime.parse import Parser, Reason
from runtime.ratelimit import RateLimitedLog
from runtime.reload import BackgroundLoader, close_quietly
from runtime.sdnotify import Notifier
from runtime.stats import LossWatch, Stats, log_line, start_prometheus
from runtime.streams import StreamEngine

log = logging.getLogger(__name__)

DRAIN_BUDGET_S = 0.5  # of the 2 s a SIGTERM may take: finishing queued readings
ACK_WAIT_S = 0.2  # then waiting for PUBACKs of the last alerts (the outbox keeps the rest)
IDLE_WAIT_S = 0.05  # longest sleep of an idle loop (bounds signal and stats latency)
EXIT_NETWORK_DEAD = 3  # the MQTT network thread ended: exit so the service manager restarts us
MOST_MISSING = 10  # devices listed by missing readings in the stats message


class Service:
    """One gateway: a loaded model, the MQTT link, the outbox and the processing loop."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.bad_input_log = RateLimitedLog(log, cfg.log_every_s)
        self.health_log = RateLimitedLog(log, cfg.log_every_s)
        self.model = load_model(cfg.model_dir, cfg.backend, cfg.artifact, cfg.threads)
        self.outbox = Outbox(cfg.state_dir, cfg.outbox, self.stats.count)
        self.debouncer = Debouncer(cfg.debounce.k, cfg.debounce.threshold)
        self.debouncer.restore(self.outbox.alert_state())
        self.engine = self._new_engine(self.model)
        # (parser, generation) in one attribute, so the network thread reads a consistent pair;
        # the generation changes when a reload changes the feature list
        self.parsing = (Parser(self.model.manifest.features, cfg.max_payload_bytes), 0)
        self.inbox: collections.deque = collections.deque()
        self.enqueued = 0  # readings appended to the inbox: written by the network thread only
        self.dequeued = 0  # readings taken from it: written by the processing loop only
        self.wakeup = threading.Event()
        # input.mode amqp: readings come from a RabbitMQ shard (runtime/amqp_input.py) into the
        # same _on_payload; MQTT then carries only alerts, stats, status and the heartbeat
        amqp = cfg.input.mode == "amqp"
        # feedback.enabled: operator verdicts in, readings around alerts kept (runtime/feedback.py)
        self.feedback: Feedback | None = None
        if cfg.feedback.enabled:
            self.feedback = Feedback(cfg, self.stats, self.model.manifest)
        self.link = MqttLink(
            cfg,
            self._on_payload,
            self._on_handler_error,
            self.wakeup.set,
            subscribe_sensors=not amqp,
            on_feedback=self.feedback.on_message if self.feedback is not None else None,
        )
        self.source: AmqpInput | None = None
        if amqp:
            self.source = AmqpInput(cfg, self._on_payload, self._on_handler_error, self.stats.count)
        self.alerts = AlertPublisher(
            cfg,
            self.link,
            self.outbox,
            self.stats,
            on_alert=self.feedback.on_alert if self.feedback is not None else None,
        )
        self.notifier = Notifier()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.loader = BackgroundLoader(cfg)
        self._ready_sent = False
        self.loss = LossWatch(cfg.loss_warn_rate)
        self.health = Health(self.stats)
        self.drift = DriftMonitor.for_model(cfg, self.model.manifest, self.stats)

    # ---- set-up -------------------------------------------------------------------------

    def _sample_period(self, model: LoadedModel) -> float:
        if self.cfg.sample_period_s is not None:
            return self.cfg.sample_period_s
        period = model.manifest.sample_period_s
        if not period:
            raise ConfigError(
                f"{self.cfg.source}: sample_period_s: the manifest has no sample_period_s; "
                "set sample_period_s (seconds between a device's readings)"
            )
        return period

    def _batch_limit(self, model: LoadedModel) -> int:
        """batching.max_batch, clamped to what the model's backend takes in one call."""
        wanted = self.cfg.batching.max_batch
        limit = model.backend.max_batch
        if limit is None or wanted <= limit:
            return wanted
        log.info(
            "batching.max_batch %d is more than %s takes per step (%d, its optimization "
            "profile); rounds carry at most %d rows",
            wanted,
            model.label,
            limit,
            limit,
        )
        return limit

    def _new_engine(self, model: LoadedModel) -> StreamEngine:
        limits = self.cfg.limits
        return StreamEngine(
            model.manifest,
            sample_period_s=self._sample_period(model),
            gap_tolerance=self.cfg.gap_tolerance,
            device_queue=self.cfg.batching.device_queue,
            max_batch=self._batch_limit(model),
            count=self.stats.count,
            max_devices=limits.max_devices,
            device_idle_s=limits.device_idle_s,
            new_device_idle_s=limits.new_device_idle_s,
            on_evict=self._forget_device,
        )

    def _forget_device(self, device_id: str) -> None:
        self.debouncer.forget(device_id)
        if self.feedback is not None:
            self.feedback.forget(device_id)
        if self.drift is not None:
            self.drift.forget(device_id)

    @contextlib.contextmanager
    def _drift_guard(self) -> Iterator[None]:
        """A failing drift monitor is logged, counted (`drift_errors`) and switched off;
        serving goes on."""
        try:
            yield
        except Exception:
            self.stats.count("drift_errors")
            log.exception("the drift monitor failed and is off until the next reload")
            self.drift = None

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
        """Validate, parse and enqueue only: this runs on paho's network thread."""
        self.stats.count("messages")
        if not 0 < len(device_id.encode()) <= self.cfg.limits.max_device_id_bytes:
            self._drop(Reason.BAD_DEVICE_ID, device_id)
            return
        parser, generation = self.parsing
        parsed = parser.parse(payload)
        if isinstance(parsed, Reason):
            self._drop(parsed, device_id)
            return
        n = len(parsed)
        queued = self.enqueued - self.dequeued + self.engine.pending_readings
        if (
            len(self.inbox) >= self.cfg.batching.queue_size
            or queued + n > self.cfg.limits.max_queued_readings
        ):
            self.stats.count(Reason.QUEUE_FULL.counter, n)
            self.bad_input_log.warning("queue_full", "input queue full; dropping readings")
            return
        self.inbox.append((device_id, parsed, received, generation))
        self.enqueued += n
        if not self.wakeup.is_set():
            self.wakeup.set()

    def _drop(self, reason: Reason, device_id: str) -> None:
        self.stats.count(reason.counter)
        self.bad_input_log.warning(
            reason.value, "dropped a message from %.80r: %s", device_id, reason.value
        )

    def _on_handler_error(self, exc: BaseException) -> None:
        """The network thread's last line of defence: one message must not stop ingestion."""
        self.stats.count(Reason.HANDLER_ERROR.counter)
        self.bad_input_log.warning(
            Reason.HANDLER_ERROR.value,
            "dropped a message that raised %s: %.200s",
            type(exc).__name__,
            exc,
        )

    # ---- processing loop ----------------------------------------------------------------

    def run(self) -> int:
        """Serves until SIGTERM/SIGINT; returns the process exit code."""
        if self.cfg.prometheus_port is not None:
            cfg = self.cfg
            start_prometheus(self.stats, cfg.prometheus_port, cfg.prometheus_host)
            log.info(
                "prometheus metrics on http://%s:%d/metrics",
                cfg.prometheus_host,
                cfg.prometheus_port,
            )
        self.link.start()
        if self.source is not None:
            self.source.start()
        now = time.monotonic()
        next_stats = now + self.cfg.stats_interval_s
        next_heartbeat = now
        while not self.stop_requested.is_set():
            now = time.monotonic()
            if not self._alive(now):
                self._shutdown()
                return EXIT_NETWORK_DEAD
            if now >= next_heartbeat:
                self.link.heartbeat()
                next_heartbeat = now + self.cfg.liveness.heartbeat_s
            self._maybe_swap_model()
            self.wakeup.clear()  # before draining, so a reading queued after it wakes us
            # every message the AMQP source delivered before this mark is in the engine after
            # the drain, so settle() may ack the ones no open window needs any more
            mark = self.source.mark() if self.source is not None else 0
            self._drain_inbox()
            if self.feedback is not None:
                self.feedback.drain(self.link.ack)  # stored, then acknowledged
            if self.engine.pending_readings:
                self._fill_batch()
                self._round()
            else:
                self._settle_acks()
                self.wakeup.wait(min(IDLE_WAIT_S, max(next_stats - time.monotonic(), 0)))
            if self.source is not None:
                self.source.settle(self.engine, mark)
            if time.monotonic() >= next_stats:
                self.engine.evict_idle(time.monotonic())
                self._publish_stats()
                next_stats = time.monotonic() + self.cfg.stats_interval_s
            if self.drift is not None and self.drift.due(time.monotonic()):
                with self._drift_guard():
                    publish_drift(
                        self.drift, time.monotonic(), self.link, self.outbox, self.debouncer.active
                    )
        self._shutdown()
        return 0

    def _alive(self, now: float) -> bool:
        """Feeds the watchdog only while the network thread makes progress as well; sends
        READY=1 once the broker accepted us. False when the network thread has ended."""
        source = self.source
        if (
            not self._ready_sent
            and self.link.connected.is_set()
            and (source is None or source.consuming.is_set())
        ):
            self._ready_sent = True
            self.notifier.ready(f"serving {self.model.label}")
            log.info(
                "serving %s on %s (gateway %s)",
                self.model.label,
                self.cfg.topics.sensors if source is None else source.amqp.primary_queue,
                self.cfg.gateway_id,
            )
        stall_after_s = self.cfg.liveness.stall_after_s
        stalled = self.link.stalled(now, stall_after_s)
        if stalled is None and source is not None:
            stalled = source.stalled(now, stall_after_s)
        if stalled is None:
            self.notifier.watchdog()
            return True
        self.stats.count("liveness_failures")
        if self.link.network_thread_ended or (source is not None and source.thread_ended):
            log.error("%s; exiting so that the service manager restarts the gateway", stalled)
            return False
        self.health_log.warning("stalled", "not feeding the watchdog: %s", stalled)
        return True

    def _drain_inbox(self) -> None:
        inbox, engine = self.inbox, self.engine
        generation = self.parsing[1]
        n = stale = 0
        drift, feedback = self.drift, self.feedback
        watched = drift is not None or feedback is not None
        observed: list[tuple[str, Any]] = []  # (device, raw values) for the drift monitor
        while inbox:
            device_id, readings, received, parsed_as = inbox.popleft()
            self.dequeued += len(readings)
            if parsed_as != generation:
                stale += len(readings)
                continue
            engine.add(device_id, readings, received)
            n += len(readings)
            device = engine.devices.get(device_id) if watched else None  # None: refused
            if device is None:
                continue
            if feedback is not None:
                feedback.observe(device_id, readings, len(device.pending))  # pending: not stepped
            if drift is not None:
                observed.append((device_id, readings.values))
        if drift is not None and observed:
            with self._drift_guard():
                drift.observe(observed)
        if n:
            self.stats.count("readings", n)
        if stale:
            self.stats.count("dropped_reload", stale)
        self.stats.gauge("queue", engine.pending_readings)

    def _fill_batch(self) -> None:
        """Sleeps max_wait_ms once before a round that would be small, so readings arriving
        together share one step call. Without it every message wakes this thread, which takes
        the GIL from paho's network thread for a tiny round (the benchmark saw rounds of ~5
        readings from 100 flooding devices). Skipped when a backlog already fills rounds."""
        wait_s = self.cfg.batching.max_wait_ms / 1000.0
        engine = self.engine
        backlog = engine.pending_readings > len(engine.ready)
        if wait_s > 0 and not backlog and len(engine.ready) < engine.max_batch:
            time.sleep(wait_s)
            self._drain_inbox()

    def _round(self) -> None:
        try:
            results, rows = self.engine.step_round(self.model.backend)
        except BackendError as exc:
            # the engine dropped the round's readings (counted) and restarted those devices
            self.stats.count("backend_errors")
            self.health_log.warning(
                "backend_error",
                "a step round failed and its readings were dropped (counted "
                "dropped_backend_error); serving goes on: %s",
                exc,
            )
            return
        n = len(results)
        self.stats.count("steps", rows)
        self.stats.count("batches")
        if not rows:
            return
        with self.alerts.round():  # one outbox commit for the round, before any publish or ack
            for result in results:
                self.alerts.on_window(result, self.model.manifest, self.debouncer)
        if self.drift is not None and results:
            with self._drift_guard():
                self.drift.observe_windows(results)
        if n:
            self.stats.count("windows", n)
        self._settle_acks()

    def _settle_acks(self) -> None:
        for waited in self.outbox.settle(self.link.connected.is_set()):
            self.stats.observe("ack", waited)
        self.outbox.pump(self.link.publish)
        self.stats.gauge("outbox_unacked", self.outbox.unacked)

    def _publish_stats(self) -> dict[str, Any]:
        engine = self.engine
        self.stats.gauge("open_windows", engine.open_windows)
        self.stats.gauge("devices", len(engine.devices))
        self.stats.gauge("outbox_dead_letters", self.outbox.dead_letters)
        if engine.newest_received is not None:
            age = time.monotonic() - engine.newest_received
            self.stats.gauge("newest_reading_age_s", round(age, 3))
        feedback = self.feedback.refresh() if self.feedback is not None else None
        snap = self.stats.snapshot()
        if feedback is not None:
            snap["feedback"] = feedback
        snap["model"] = self.model.label
        snap["connected"] = self.link.connected.is_set()
        snap["network"] = self.link.stalled(time.monotonic(), self.cfg.liveness.stall_after_s)
        snap["missing_by_device"] = engine.most_missing(MOST_MISSING)
        warning = self.loss.warning(snap["counters"])
        if warning:
            self.health_log.warning("loss", "%s", warning)
        snap["warnings"] = [warning] if warning else []
        snap["health"] = self.health.snapshot(self.model)
        self.link.publish(self.cfg.topic(self.cfg.topics.stats), dumps(snap), qos=0)
        log.info("stats: %s", log_line(snap))
        self.notifier.status(log_line(snap))
        return snap

    # ---- reload (SIGHUP) ----------------------------------------------------------------

    def _maybe_swap_model(self) -> None:
        if self.reload_requested.is_set() and not self.loader.busy:
            self.reload_requested.clear()
            self.notifier.reloading()
            self.loader.start()
        loaded = self.loader.result()
        if loaded is None:
            return
        if isinstance(loaded, EdgeRuntimeError):
            log.error("reload failed, still serving %s: %s", self.model.label, loaded)
            self.stats.count("reload_failures")
        else:
            self._swap(loaded)
        self.notifier.ready(f"serving {self.model.label}")

    def _swap(self, new: LoadedModel) -> None:
        """Switches models between two rounds. Every open window restarts on the new model (a
        window's state from the old weights would match neither model); queued readings move
        over when the feature list is the same and are dropped, counted, when it is not."""
        old = self.model
        fresh = self._new_engine(new)
        restarted = self.engine.open_windows
        if new.manifest.features == old.manifest.features:
            moved, dropped = self.engine.move_pending(fresh), 0
        else:
            moved, dropped = 0, self.engine.pending_readings
            self.parsing = (
                Parser(new.manifest.features, self.cfg.max_payload_bytes),
                self.parsing[1] + 1,
            )
        if dropped:
            self.stats.count("dropped_reload", dropped)
        self.stats.count("reload_restarted_windows", restarted)
        self.engine = fresh
        if new.manifest.classes != old.manifest.classes:
            self.debouncer = Debouncer(self.cfg.debounce.k, self.cfg.debounce.threshold)
            self.outbox.clear_alert_state()
        self.model = new
        self.drift = DriftMonitor.for_model(self.cfg, new.manifest, self.stats)
        if self.feedback is not None:
            self.feedback.reload(new.manifest)
        close_quietly(old)
        self.stats.count("reloads")
        log.info(
            "reloaded: now serving %s; restarted %d open windows, moved %d queued readings, "
            "dropped %d",
            new.label,
            restarted,
            moved,
            dropped,
        )

    # ---- shutdown -----------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Finishes queued readings (bounded), waits briefly for acks, says offline."""
        self.notifier.stopping()
        source = self.source
        if source is not None:
            source.pause()  # nothing new arrives; what is queued here is finished or requeued
        mark = source.mark() if source is not None else 0
        deadline = time.monotonic() + DRAIN_BUDGET_S
        self._drain_inbox()
        while self.engine.pending_readings and time.monotonic() < deadline:
            self._round()
            self._drain_inbox()
        if self.engine.pending_readings:
            self.stats.count("dropped_shutdown", self.engine.pending_readings)
        if source is not None:
            # ack what no open window needs; the broker hands the rest to the standby
            source.settle(self.engine, mark)
            source.stop()
        deadline = time.monotonic() + ACK_WAIT_S
        while self.outbox.unacked and self.link.connected.is_set():
            self._settle_acks()
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        if self.feedback is not None:
            self.feedback.drain(self.link.ack)
        snap = self._publish_stats()
        self.link.stop()
        self.outbox.close()
        if self.feedback is not None:
            self.feedback.close()
        close_quietly(self.model)
        self.loader.close()
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
