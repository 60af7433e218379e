"""Readings from one shard of a RabbitMQ topology (input.mode: amqp) instead of MQTT.

Why: MQTT shared subscriptions hand one device's readings to different workers, which breaks
its recurrent state. RabbitMQ pins every device to one queue (runtime/amqp_topology.py) and
each queue to one consumer at a time (x-single-active-consumer), so N processes share the
devices and a standby takes over a dead worker's queue. Alerts, stats and status still go out
over MQTT (runtime/mqtt.py, without the sensor subscription).

Threads: pika's BlockingConnection is not thread-safe, so one thread (`edgelstm-amqp`) owns it.
It only maps the routing key to a device id and calls the same entry point MQTT messages use
(`Service._on_payload`), like paho's network thread; acks are queued to it with
`add_callback_threadsafe`. The processing loop calls `settle()` after each round.

Ack rule (why a kill -9 loses no reading and decides no window twice): a message is acked
only once none of its readings is still needed, i.e. every window holding one of them has
closed, been debounced, and its alert (if any) committed to the outbox (SQLite, same loop
iteration). So what a dead worker leaves unacked is exactly its open windows' readings plus
what it had not stepped; the broker requeues them, in order, to the standby, whose windows for
that device restart at the first redelivered reading: the start of the oldest window the dead
worker had open. With one reading per message the standby's windows are the ones the dead
worker would have closed; no window the dead worker closed is computed again except in the
few milliseconds between a close and its ack reaching the broker. Committed alerts stay in
the dead worker's outbox and go out when it restarts, with their deterministic ids. The cost:
each worker holds about ceil(W / readings per message) + 1 unacked messages per device, so
`input.amqp.prefetch` must exceed that times its devices; near the limit the oldest are acked
early (counted `amqp_early_acks`, warned) rather than the consumer stalling.

Devices and shares: a device belongs to the queue the broker routes it to (the ring is the
broker's and cannot be recomputed here). A device that arrives on a second queue of this worker
is a stray (counted `amqp_strays`: the ring changed or a binding is wrong) and now belongs to
the new queue. A device first seen in a redelivered message, or on a standby queue, has moved
here (failover or rebalance, counted `amqp_moved_devices`): its windows start fresh at its
first reading here; a device that comes back after serving elsewhere restarts through the
stream engine's gap or out-of-order rule (counted there). A rebalance that hands a device to
another worker (a queue added to the ring) leaves its open windows here unfinished: once the
engine evicts the silent device (`limits.device_idle_s`), the messages it held are acked and
the device is counted `amqp_released_devices`; the new owner starts its windows at the first
reading it gets, like a new device.

A connection that breaks (broker restart, `rabbitmqctl close_connection`, a network cut) is
opened again after `input.amqp.reconnect_s`; the broker re-delivers, in order, every message
not acked on the old channel, so the devices' windows restart at the oldest reading still
needed (the engine's out-of-order rule) and no reading is lost.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from runtime.config import GatewayConfig
from runtime.mqtt import device_id_position, topic_levels
from runtime.parse import BINARY_MAGIC
from runtime.ratelimit import RateLimitedLog
from runtime.streams import StreamEngine

log = logging.getLogger(__name__)
logging.getLogger("pika").setLevel(logging.WARNING)  # INFO: lines per connection event

POLL_S = 0.05  # longest pika wait per loop turn: bounds stop and liveness latency
STANDBY_POLL_S = 0.5  # how often a standby checks that its queue's primary has registered
EARLY_ACK_FRACTION = 0.9  # of the prefetch: beyond it the oldest messages are acked early
NOT_FOUND = 404  # AMQP reply code: no such queue
MAX_OWNED_FACTOR = 2  # device → queue entries kept, as a multiple of limits.max_devices
_TS = struct.Struct("<d")


def device_from_routing_key(routing_key: str, pattern: str) -> str | None:
    """The device id in a routing key the MQTT plugin made from a topic matching `pattern`
    (`sensors/+/data`), or None when the key does not match it. RabbitMQ 3.10 turns every '/'
    into '.' and keeps the dots of a level, so `sensors/pump.7/data` arrives as
    `sensors.pump.7.data`: the device is everything between the pattern's fixed words."""
    levels = topic_levels(pattern)
    at = device_id_position(pattern)
    head = [w for level in levels[:at] for w in level.split(".")]
    tail = [w for level in levels[at + 1 :] for w in level.split(".")]
    words = routing_key.split(".")
    middle = len(words) - len(head) - len(tail)
    if middle < 1 or words[: len(head)] != head or words[len(words) - len(tail) :] != tail:
        return None
    return ".".join(words[len(head) : len(head) + middle])


def last_timestamp(payload: bytes) -> float | None:
    """The newest reading's ts in a payload (JSON or binary, runtime/parse.py), without
    validating the rest; None when there is none to find (the parser drops such a message)."""
    try:
        if payload[:2] == BINARY_MAGIC:
            count = int.from_bytes(payload[4:6], "little")
            row = (len(payload) - 6) // count
            return _TS.unpack_from(payload, 6 + (count - 1) * row)[0]
        ts = json.loads(payload)["ts"]
        value = float(ts[-1] if isinstance(ts, list) else ts)
        return value if math.isfinite(value) else None
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, struct.error):
        return None


def needed_from(engine: StreamEngine, device_id: str) -> float:
    """The oldest reading ts the engine still needs of a device: the start of its oldest open
    window or its oldest reading not stepped yet; +inf when it needs none."""
    dev = engine.devices.get(device_id)
    if dev is None:
        return math.inf
    oldest = math.inf
    if dev.starts:  # open windows' first readings, oldest first (runtime/streams.py)
        oldest = dev.starts[0]
    if dev.pending:
        oldest = min(oldest, dev.pending[0][0])
    return oldest


class AmqpInput:
    """Consumes this worker's shard queue (and, as a standby, the next ones) with pika."""

    def __init__(
        self,
        cfg: GatewayConfig,
        on_payload: Callable[[str, bytes, float], None],
        on_error: Callable[[BaseException], None],
        count: Callable[[str, int], None],
    ) -> None:
        self.cfg = cfg
        self.amqp = cfg.input.amqp
        self.on_payload, self.on_error, self.count = on_payload, on_error, count
        self.connected = threading.Event()
        self.consuming = threading.Event()  # the primary queue's consumer is registered
        self.heard = time.monotonic()  # last turn of the consumer loop
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._channel: Any = None
        self.generation = 0  # one per channel: delivery tags of an older one cannot be acked
        self._queues_by_tag: dict[str, str] = {}
        self._standby = set(self.amqp.standby_queues)
        self._owner: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._max_owned = cfg.limits.max_devices * MAX_OWNED_FACTOR
        # written by the consumer thread: (device or None, generation, tag, newest ts)
        self._delivered: collections.deque = collections.deque()
        self.delivered_count = 0
        # the processing loop's: device -> deque of (generation, tag, newest ts), in order
        self._taken = 0
        self._unacked: dict[str, collections.deque] = {}
        self.unacked = 0
        self._log = RateLimitedLog(log, cfg.log_every_s)

    # ---- lifecycle (processing loop) ----------------------------------------------------

    @property
    def url_for_logs(self) -> str:
        head, _, tail = self.amqp.url.rpartition("@")
        return f"amqp://{tail}" if head else self.amqp.url

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgelstm-amqp", daemon=True)
        self._thread.start()
        log.info(
            "consuming %s (standby for %s) at %s",
            self.amqp.primary_queue,
            ", ".join(sorted(self._standby)) or "none",
            self.url_for_logs,
        )

    @property
    def thread_ended(self) -> bool:
        thread = self._thread
        return thread is not None and not thread.is_alive() and not self._stop.is_set()

    def stalled(self, now: float, stall_after_s: float) -> str | None:
        """Why the AMQP side makes no progress, or None while it does (the MQTT rule:
        reconnecting counts as alive)."""
        if self.thread_ended:
            return "the AMQP consumer thread has ended"
        if not self.connected.is_set():
            return None
        silent = now - self.heard
        if silent > stall_after_s:
            return f"the AMQP consumer loop made no progress for {silent:.0f} s while connected"
        return None

    def mark(self) -> int:
        """Messages handed to on_payload so far: read it before draining the inbox, and every
        one of them is in the stream engine (or dropped) after the drain."""
        return self.delivered_count

    def pause(self, timeout_s: float = 1.0) -> bool:
        """Stops new deliveries (basic.cancel) so shutdown decides nothing the standby will
        decide again; True once the consumer thread confirmed."""
        if not self._call(self._cancel_all):
            return False
        return self._paused.wait(timeout_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Closes the connection: what is unacked goes back to the queue, in order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ---- acks (processing loop) ---------------------------------------------------------

    def settle(self, engine: StreamEngine, mark: int) -> int:
        """Acks every message of the first `mark` deliveries that no window needs any more;
        returns how many it acked."""
        delivered, unacked = self._delivered, self._unacked
        ready: list[tuple[int, int]] = []
        for _ in range(mark - self._taken):
            device_id, generation, tag, newest = delivered.popleft()
            if device_id is None or newest is None:
                ready.append((generation, tag))  # dropped by the parser or not a sensor key
                continue
            unacked.setdefault(device_id, collections.deque()).append((generation, tag, newest))
            self.unacked += 1
        self._taken = max(self._taken, mark)
        current = self.generation
        released = 0
        for device_id in list(unacked):
            queue = unacked[device_id]
            boundary = needed_from(engine, device_id)
            if device_id not in engine.devices and any(g == current for g, _, _ in queue):
                released += 1  # evicted or refused: the open windows it held are gone
            while queue and (queue[0][2] < boundary or queue[0][0] != current):
                generation, tag, _ = queue.popleft()
                self.unacked -= 1
                if generation == current:
                    ready.append((generation, tag))
            if not queue:
                del unacked[device_id]
        if released:
            self.count("amqp_released_devices", released)
        if self.unacked >= EARLY_ACK_FRACTION * self.amqp.prefetch:
            ready += self._ack_early()
        if ready:
            self._call(lambda: self._ack(ready))
        return len(ready)

    def _ack_early(self) -> list[tuple[int, int]]:
        """Near the prefetch limit the broker would stop sending while every held message
        waits for readings it will not send: ack the older half of each device's instead."""
        early: list[tuple[int, int]] = []
        for queue in self._unacked.values():
            for _ in range(len(queue) // 2 or len(queue)):
                generation, tag, _ = queue.popleft()
                early.append((generation, tag))
        self.unacked -= len(early)
        self._unacked = {d: q for d, q in self._unacked.items() if q}
        self.count("amqp_early_acks", len(early))
        self._log.warning(
            "early_ack",
            "input.amqp.prefetch (%d) is nearly used up by messages whose windows are still "
            "open; acked %d early (a kill now would lose their windows): raise "
            "input.amqp.prefetch above devices x (ceil(window / readings per message) + 1)",
            self.amqp.prefetch,
            len(early),
        )
        return early

    def _call(self, fn: Callable[[], None]) -> bool:
        """Runs fn on the consumer thread; False when there is no connection to run it on."""
        connection = self._connection
        if connection is None:
            return False
        try:
            connection.add_callback_threadsafe(fn)
        except Exception:  # closed between the check and the call: the broker requeues
            return False
        return True

    # ---- consumer thread ----------------------------------------------------------------

    def _ack(self, tags: list[tuple[int, int]]) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        for generation, tag in tags:
            if generation == self.generation:
                channel.basic_ack(tag)

    def _cancel_all(self) -> None:
        channel = self._channel
        if channel is not None and channel.is_open:
            for tag in list(self._queues_by_tag):
                channel.basic_cancel(tag)
        self._paused.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except Exception as exc:  # a broken connection must never end this thread
                self._log.warning(
                    "amqp_connect",
                    "AMQP connection to %s failed or broke: %s: %s; retrying in %.0f s",
                    self.url_for_logs,
                    type(exc).__name__,
                    exc,
                    self.amqp.reconnect_s,
                )
            finally:
                self._forget_channel()
            self._stop.wait(self.amqp.reconnect_s)

    def _forget_channel(self) -> None:
        """The broker requeued every unacked message of the channel that went: none of its
        tags may be acked any more. Which queue each device came from is kept: when the next
        connection gets the same queues back, their re-delivered devices have not moved (a
        device that arrives on another queue still counts as a stray and a move)."""
        connection = self._connection
        self._connection = self._channel = None
        self._queues_by_tag.clear()
        self.generation += 1
        if self.connected.is_set():
            self.count("amqp_disconnects", 1)
        self.connected.clear()
        self.consuming.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("closing the AMQP connection failed", exc_info=True)

    def _session(self) -> None:
        import pika

        params = pika.URLParameters(self.amqp.url)
        params.heartbeat = self.amqp.heartbeat_s
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 60
        connection = pika.BlockingConnection(params)
        self._connection = connection
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self.amqp.prefetch)
        self._channel = channel
        self.generation += 1
        self.heard = time.monotonic()
        self.connected.set()
        self._consume(self.amqp.primary_queue, "primary")
        self.consuming.set()
        waiting = list(self._standby)
        opened = time.monotonic()
        next_check = opened
        while not self._stop.is_set():
            now = time.monotonic()
            if waiting and now >= next_check:
                waiting = self._join_standby(waiting, now - opened)
                next_check = now + STANDBY_POLL_S
            connection.process_data_events(time_limit=POLL_S)
            self.heard = time.monotonic()
        connection.process_data_events(time_limit=0)  # the last acks settle() queued

    def _consume(self, queue: str, role: str) -> None:
        import pika

        try:
            tag = self._channel.basic_consume(queue, self._on_message, auto_ack=False)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise self._missing(queue) if exc.reply_code == NOT_FOUND else exc from None
        self._queues_by_tag[tag] = queue
        log.info("consuming queue %s (%s)", queue, role)

    def _missing(self, queue: str) -> RuntimeError:
        return RuntimeError(
            f"queue {queue} does not exist on the broker: declare the topology "
            f"(deploy/rabbitmq/setup.sh --shards {self.amqp.shards}, or python -m "
            f"runtime.amqp_topology --shards {self.amqp.shards} --url URL)"
        )

    def _join_standby(self, waiting: list[str], since_open_s: float) -> list[str]:
        """Registers on a standby queue once its primary has (so at a cold start every queue
        goes to its own worker), or after standby_delay_s when no primary shows up."""
        left = []
        for queue in waiting:
            import pika

            try:
                declared = self._channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                raise self._missing(queue) if exc.reply_code == NOT_FOUND else exc from None
            consumers = declared.method.consumer_count
            if consumers >= 1 or since_open_s >= self.amqp.standby_delay_s:
                self._consume(queue, "standby: served only while its worker is gone")
            else:
                left.append(queue)
        return left

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        received = time.monotonic()
        device_id = newest = None
        try:
            device_id = device_from_routing_key(method.routing_key, self.cfg.topics.sensors)
            if device_id is None:
                self.count("amqp_unroutable", 1)
            else:
                self._track(device_id, self._queues_by_tag.get(method.consumer_tag, ""), method)
                self.on_payload(device_id, body, received)
                newest = last_timestamp(body)
        except Exception as exc:  # one message must never end this thread
            self.on_error(exc)
        self._delivered.append((device_id, self.generation, method.delivery_tag, newest))
        self.delivered_count += 1

    def _track(self, device_id: str, queue: str, method: Any) -> None:
        """Counts strays (a second queue for one device) and moves (failover, rebalance)."""
        owner = self._owner.get(device_id)
        if owner == queue:
            self._owner.move_to_end(device_id)
            return
        if owner is not None:
            self.count("amqp_strays", 1)
            self._log.warning(
                "stray",
                "device %.80r arrived on %s but belonged to %s here: the hash ring changed "
                "or a binding is wrong; it now belongs to %s",
                device_id,
                queue,
                owner,
                queue,
            )
        if owner is not None or method.redelivered or queue in self._standby:
            self.count("amqp_moved_devices", 1)  # not a device re-delivered on its own queue
        self._owner[device_id] = queue
        self._owner.move_to_end(device_id)
        if len(self._owner) > self._max_owned:
            self._owner.popitem(last=False)
