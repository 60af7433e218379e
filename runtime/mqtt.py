"""The gateway's MQTT connection (paho-mqtt 2.x, callback API v2): session, will, TLS, nodelay.

The client runs paho's network thread (`loop_start`); `on_message` hands the payload to a
callback that must only parse and enqueue (work on that thread makes the broker drop messages,
docs/ARCHITECTURE.md, "Threads of serve"). Nothing raised while handling one message may reach
paho, where it would end the network thread for good: it goes to `on_error` instead.

Liveness: the processing loop publishes a small heartbeat to the gateway's own heartbeat topic,
which this client is subscribed to; its echo (or any message) proves that the network thread
still reads. `stalled()` says why the network side is not making progress, if it is not. Until
a first echo has arrived (a broker ACL may filter it) only the thread's being alive counts.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.config import GatewayConfig
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

PAHO_QUEUE_MARGIN = 10_000  # window results (emit: all) paho may hold beyond the alerts
PACKET_OVERHEAD_BYTES = 1_024  # fixed header, topic length field and v5 properties
ONLINE = b"online"
UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK reason; paho maps a 3.1.1 broker's refusal to it
OFFLINE = b"offline"


def topic_levels(pattern: str) -> list[str]:
    """Levels of the topics a subscription pattern matches: an MQTT v5 shared subscription
    (`$share/<group>/sensors/+/data`, for several workers on one stream) delivers messages on
    the plain topic, so its two-level prefix is not part of them."""
    levels = pattern.split("/")
    return levels[2:] if levels[0] == "$share" else levels


def device_id_position(pattern: str) -> int:
    """Index of the '+' level (the device id) in the topics the sensor pattern matches."""
    return topic_levels(pattern).index("+")


def nodelay_on_socket_open(client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
    """paho `on_socket_open`: TCP_NODELAY on the client's socket. Nagle + delayed ACK turns a
    QoS 1 round trip into ~44-88 ms on loopback (docs/ARCHITECTURE.md, "Facts measured")."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        log.debug("TCP_NODELAY not available on this socket")


def set_nodelay(client: mqtt.Client) -> mqtt.Client:
    """Every socket `client` opens (reconnects included) gets TCP_NODELAY; returns client."""
    client.on_socket_open = nodelay_on_socket_open
    return client


def max_packet_bytes(cfg: GatewayConfig) -> int:
    """The MQTT v5 Maximum Packet Size this gateway announces: the broker then never sends a
    message larger than the parser would accept (instead of paho reading it whole first)."""
    topic = len(cfg.topics.sensors.encode()) + cfg.limits.max_device_id_bytes
    return cfg.max_payload_bytes + topic + PACKET_OVERHEAD_BYTES


class MqttLink:
    """One paho client: subscribes to sensor topics, publishes alerts, stats and status."""

    def __init__(
        self,
        cfg: GatewayConfig,
        on_payload: Callable[[str, bytes, float], None],
        on_error: Callable[[BaseException], None],
        on_ack: Callable[[], None] = lambda: None,
        subscribe_sensors: bool = True,  # False: readings come another way (input.mode: amqp)
        # topics.feedback (runtime/feedback.py): (device, payload, mid, qos) -> True when the
        # callback acks the message itself (once stored); the client then runs with manual acks
        on_feedback: Callable[[str, bytes, int, int], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.subscribe_sensors = subscribe_sensors
        self.on_feedback = on_feedback
        self.feedback_topic = cfg.topic(cfg.topics.feedback)
        self._feedback_levels = self.feedback_topic.split("/")
        self.on_payload = on_payload
        self.on_error = on_error
        self.on_ack = on_ack  # wakes the processing loop so a PUBACK is settled at once
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker granted the sensor subscription
        self.status_topic = cfg.topic(cfg.topics.status)
        self.heartbeat_topic = cfg.topic(cfg.topics.heartbeat)
        self.heard = time.monotonic()  # newest message of any kind (network thread progress)
        # True from the first echo on: Mosquitto grants a subscription its ACL then filters, so
        # only an echo that arrived proves the broker delivers it
        self.heartbeat_echoes = False
        self._connected_at = 0.0
        self._warned_no_echo = False
        self.connect_failures = 0  # since the last successful connection
        self._network_thread: threading.Thread | None = None
        self._connect_log = RateLimitedLog(log, cfg.log_every_s)
        self._device_pos = device_id_position(cfg.topics.sensors)
        self._levels = len(topic_levels(cfg.topics.sensors))
        b = cfg.broker
        v5 = b.protocol == 5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else b.clean_start,
        )
        self._secure()
        self.client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(b.reconnect_min_s, b.reconnect_max_s)
        # the outbox bounds our own alerts; paho's inflight window only paces the socket, and
        # its queue bound keeps emit-all results from growing memory while the broker is away
        self.client.max_inflight_messages_set(max(cfg.outbox.max_inflight, 20))
        self.client.max_queued_messages_set(cfg.outbox.max_inflight + PAHO_QUEUE_MARGIN)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        if on_feedback is not None:
            self.client.manual_ack_set(True)
        self.client.on_publish = self._on_publish
        self.client.on_socket_open = self._on_socket_open

    def _secure(self) -> None:
        """Login and TLS, with a warning when a password would cross the network in clear."""
        b = self.cfg.broker
        if b.username is not None:
            self.client.username_pw_set(b.username, b.password)
        if b.password is not None and b.tls is None:
            log.warning(
                "broker.password is set but broker.tls is not: the password crosses the network "
                "in clear text; configure broker.tls (deploy/mosquitto/tls.conf shows the broker)"
            )
        if b.tls is not None:
            self.client.tls_set(
                ca_certs=b.tls.ca_certs,
                certfile=b.tls.certfile,
                keyfile=b.tls.keyfile,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(b.tls.insecure)

    @property
    def broker_url(self) -> str:
        return f"mqtt://{self.cfg.broker.host}:{self.cfg.broker.port}"

    def start(self) -> None:
        """Connects in the background; paho retries with backoff until the broker answers."""
        b = self.cfg.broker
        props = None
        clean_start: bool | int = b.clean_start
        if b.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if b.clean_start else b.session_expiry_s
            props.MaximumPacketSize = max_packet_bytes(self.cfg)
        else:
            clean_start = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect_async(
            b.host, b.port, keepalive=b.keepalive, clean_start=clean_start, properties=props
        )
        self.client.loop_start()
        log.info("connecting to %s as %s", self.broker_url, self.cfg.client_id)

    def wait_subscribed(self, timeout_s: float) -> bool:
        """True once connected and subscribed: readings published from then on arrive."""
        return self.subscribed.wait(timeout_s)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        """Hands a message to paho; None when it cannot be sent now. Nothing is offered while
        disconnected: the outbox is the durable queue, and paho 2.2's handle of a message queued
        without a connection never reports its PUBACK. Raises ValueError for a message that
        can never be sent (topic or payload too long)."""
        if not self.connected.is_set():
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return None
        return info

    def heartbeat(self) -> None:
        """Publishes the echo that `stalled()` waits for (QoS 0, only while connected)."""
        self.publish(self.heartbeat_topic, b"", qos=0)

    def stalled(self, now: float, stall_after_s: float) -> str | None:
        """Why the network side makes no progress, or None while it does."""
        if self.network_thread_ended:
            return "the MQTT network thread has ended"
        if not self.connected.is_set():
            return None  # paho is (re)connecting: its thread is alive, the broker is away
        if not self.heartbeat_echoes:
            self._warn_no_echo(now, stall_after_s)
            return None
        silent = now - self.heard
        if silent > stall_after_s:
            return f"no heartbeat echo for {silent:.0f} s while connected"
        return None

    def _warn_no_echo(self, now: float, stall_after_s: float) -> None:
        if not self._warned_no_echo and now - self._connected_at > stall_after_s:
            self._warned_no_echo = True
            log.warning(
                "no echo of %s since connecting: the watchdog checks only that the network "
                "thread is alive; allow this gateway to read that topic in the broker's ACL",
                self.heartbeat_topic,
            )

    @property
    def network_thread_ended(self) -> bool:
        thread = self._network_thread
        return thread is not None and not thread.is_alive()

    def stop(self, timeout_s: float = 0.3) -> None:
        """Publishes `offline` (retained), waits briefly for it, then disconnects cleanly."""
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                log.debug("offline status not confirmed before disconnecting")
            self.client.disconnect()
        self.client.loop_stop()

    def _next_retry_s(self) -> int:
        """paho's reconnect delay after this many failures: doubling from min up to max."""
        b = self.cfg.broker
        return min(b.reconnect_min_s * 2 ** max(self.connect_failures - 1, 0), b.reconnect_max_s)

    def _note_network_thread(self) -> None:
        if self._network_thread is None:
            self._network_thread = threading.current_thread()

    def _on_socket_open(self, client, userdata, sock) -> None:
        self._note_network_thread()
        nodelay_on_socket_open(client, userdata, sock)

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError:`, so the reason is the active one
        self._note_network_thread()
        self.connect_failures += 1
        reason = sys.exc_info()[1] or "no reason given"
        self._connect_log.warning(
            "connect",
            "connection to %s failed: %s; retrying in %d s",
            self.broker_url,
            reason,
            self._next_retry_s(),
        )

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._note_network_thread()
        if reason_code.is_failure:
            self.connect_failures += 1
            if self.cfg.broker.protocol == 5 and reason_code == UNSUPPORTED_PROTOCOL_VERSION:
                # a 3.1.1-only broker (RabbitMQ's MQTT plugin before 3.13, older Mosquitto)
                self._connect_log.error(
                    "connect_protocol",
                    "connection to %s failed: the broker does not speak MQTT v5 (%s): set "
                    "broker.protocol: 311 in %s; retrying in %d s",
                    self.broker_url,
                    reason_code,
                    self.cfg.source,
                    self._next_retry_s(),
                )
                return
            self._connect_log.warning(
                "connect",
                "connection to %s failed: the broker refused it (%s); retrying in %d s",
                self.broker_url,
                reason_code,
                self._next_retry_s(),
            )
            return
        self.connect_failures = 0
        self.heard = self._connected_at = time.monotonic()
        log.info("connected to the broker (session present: %s)", bool(flags.session_present))
        sensors = [(self.cfg.topics.sensors, self.cfg.topics.sensor_qos)]
        feedback = [(self.feedback_topic, 1)] if self.on_feedback is not None else []
        client.subscribe(
            [*(sensors if self.subscribe_sensors else []), (self.heartbeat_topic, 0), *feedback]
        )
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if reason_codes and not reason_codes[0].is_failure:
            self.subscribed.set()
        if reason_codes and reason_codes[0].is_failure:
            log.error(
                "the broker refused the subscription to %s (%s): no readings will arrive; "
                "check the broker's ACL",
                self.cfg.topics.sensors,
                reason_codes[0],
            )
        if self.on_feedback is not None and reason_codes and reason_codes[-1].is_failure:
            log.error(
                "the broker refused the subscription to %s (%s): no verdicts will arrive; "
                "check the broker's ACL",
                self.feedback_topic,
                reason_codes[-1],
            )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.connected.is_set():
            # closed before a CONNACK: e.g. TLS 1.3, where a refused client certificate only
            # shows on the first read after a handshake that looked fine
            self.connect_failures += 1
            self._connect_log.warning(
                "connect",
                "connection to %s failed: closed by the broker before CONNACK (%s); "
                "retrying in %d s",
                self.broker_url,
                reason_code,
                self._next_retry_s(),
            )
            return
        self.connected.clear()
        self.subscribed.clear()
        if reason_code.is_failure:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.on_ack()

    def _on_message(self, client, userdata, message) -> None:
        acked_later = False  # with manual acks (feedback on) every other message is acked here
        try:
            self.heard = received = time.monotonic()
            topic = message.topic
            if topic == self.heartbeat_topic:
                self.heartbeat_echoes = True
                return
            levels = topic.split("/")
            if self.on_feedback is not None:
                feedback_device = self._feedback_device(levels)
                if feedback_device is not None:
                    acked_later = self.on_feedback(
                        feedback_device, message.payload, message.mid, message.qos
                    )
                    return
            if len(levels) != self._levels:
                return
            self.on_payload(levels[self._device_pos], message.payload, received)
        except Exception as exc:  # one message must never end paho's network thread
            self.on_error(exc)
        finally:
            if self.on_feedback is not None and not acked_later:
                self.ack(message.mid, message.qos)

    def _feedback_device(self, levels: list[str]) -> str | None:
        """The device id of a topics.feedback topic, None for any other topic."""
        pattern = self._feedback_levels
        if len(levels) != len(pattern):
            return None
        if any(p != "+" and p != level for p, level in zip(pattern, levels, strict=True)):
            return None
        return levels[pattern.index("+")]

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledges a received message (manual acks, feedback on); QoS 0 needs none. Not
        while disconnected: the broker re-sends the message in the resumed session instead."""
        if qos and self.connected.is_set():
            self.client.ack(mid, qos)
