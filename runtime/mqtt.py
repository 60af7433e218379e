"""The gateway's MQTT connection (paho-mqtt 2.x, callback API v2): session, will, TLS, nodelay.

The client runs paho's network thread (`loop_start`); `on_message` hands the payload to a
callback that must only parse and enqueue (work on that thread makes the broker drop messages,
see DESIGN.md). PUBACKs are queued as message ids for the processing loop to consume.
"""

from __future__ import annotations

import collections
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.config import GatewayConfig

log = logging.getLogger(__name__)

PAHO_QUEUE_MARGIN = 10_000  # window results (emit: all) paho may hold beyond the alerts
ONLINE = b"online"
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


class MqttLink:
    """One paho client: subscribes to sensor topics, publishes alerts, stats and status."""

    def __init__(
        self,
        cfg: GatewayConfig,
        on_payload: Callable[[str, bytes, float], None],
        on_ack: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg = cfg
        self.on_payload = on_payload
        self.on_ack = on_ack  # wakes the processing loop so a PUBACK is settled at once
        self.acks: collections.deque[int] = collections.deque()
        self.connected = threading.Event()
        self.connects = 0
        self.status_topic = cfg.topic(cfg.topics.status)
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
        if b.username is not None:
            self.client.username_pw_set(b.username, b.password)
        if b.tls is not None:
            self.client.tls_set(
                ca_certs=b.tls.ca_certs,
                certfile=b.tls.certfile,
                keyfile=b.tls.keyfile,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(b.tls.insecure)
        self.client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(b.reconnect_min_s, b.reconnect_max_s)
        # the outbox bounds our own alerts; paho's inflight window only paces the socket, and
        # its queue bound keeps emit-all results from growing memory while the broker is away
        self.client.max_inflight_messages_set(max(cfg.outbox.max_inflight, 20))
        self.client.max_queued_messages_set(cfg.outbox.max_inflight + PAHO_QUEUE_MARGIN)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_socket_open = self._on_socket_open

    def start(self) -> None:
        """Connects in the background; paho retries with backoff until the broker answers."""
        b = self.cfg.broker
        props = None
        clean_start: bool | int = b.clean_start
        if b.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if b.clean_start else b.session_expiry_s
        else:
            clean_start = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect_async(
            b.host, b.port, keepalive=b.keepalive, clean_start=clean_start, properties=props
        )
        self.client.loop_start()
        log.info("connecting to mqtt://%s:%d as %s", b.host, b.port, self.cfg.client_id)

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Hands a message to paho (queued while disconnected); None when paho refuses it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return None
        return info.mid

    def stop(self, timeout_s: float = 0.3) -> None:
        """Publishes `offline` (retained), waits briefly for it, then disconnects cleanly."""
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + timeout_s
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.005)
            self.client.disconnect()
        self.client.loop_stop()

    def _on_socket_open(self, client, userdata, sock) -> None:
        # Nagle + delayed ACK turns a QoS 1 round trip into ~44-88 ms on loopback (DESIGN.md)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            log.debug("TCP_NODELAY not available on this socket")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        log.info("connected to the broker (session present: %s)", bool(flags.session_present))
        client.subscribe(self.cfg.topics.sensors, qos=self.cfg.topics.sensor_qos)
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acks.append(mid)
        self.on_ack()

    def _on_message(self, client, userdata, message) -> None:
        levels = message.topic.split("/")
        if len(levels) != self._levels:
            return
        self.on_payload(levels[self._device_pos], message.payload, time.monotonic())
