"""The gateway config (configs/gateway.yaml): dataclasses with explicit checks, no pydantic.

Every error names the file and the dotted key, so a typo on a gateway fails in one clear line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.amqp_topology import QUEUE_PREFIX
from runtime.errors import ConfigError

BACKENDS = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
OVERFLOW_POLICIES = ("drop_oldest", "drop_new")
EMIT_MODES = ("alerts", "all")
SYNCHRONOUS_MODES = ("normal", "full")
MQTT_MAX_TOPIC_BYTES = 65_535
MQTT_PROTOCOLS = (5, 311)
DEFAULT_SESSION_EXPIRY_S = 86_400

Check = tuple[bool, str, str]  # (holds, dotted key, what the key must be)


@dataclass
class TlsConfig:
    """Broker TLS: a CA to trust and, for client-certificate auth, a cert and key."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False  # skip hostname verification (test brokers only)


@dataclass
class BrokerConfig:
    """Where the MQTT broker is and how this gateway logs in."""

    host: str = "127.0.0.1"
    port: int = 1883
    # 5 (MQTT v5) or 311 (MQTT 3.1.1): 311 for RabbitMQ's MQTT plugin (3.1.1 only) and for
    # high-rate gateways (paho decodes v5 properties of every message: ~10-40 us each here)
    protocol: int = 5
    client_id: str | None = None  # default: edgelstm-<gateway_id>
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    clean_start: bool = False  # False = persistent session: QoS 1 survives reconnects
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S  # MQTT v5 session lifetime on the broker
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    tls: TlsConfig | None = None

    def checks(self) -> list[Check]:
        return [
            (
                self.protocol in MQTT_PROTOCOLS,
                "protocol",
                "must be 5 or 311 (5: MQTT v5; 311: MQTT 3.1.1, for RabbitMQ's MQTT plugin and "
                "high-rate gateways)",
            ),
            # what the gateway uses MQTT v5 for, refused under 3.1.1 where it cannot work
            (
                self.protocol == 5 or self.session_expiry_s == DEFAULT_SESSION_EXPIRY_S,
                "session_expiry_s",
                "needs broker.protocol: 5; MQTT 3.1.1 has no session expiry (the broker's own "
                "setting applies, e.g. Mosquitto's persistent_client_expiration): remove "
                "broker.session_expiry_s or set broker.protocol: 5",
            ),
            (0 < self.port < 65536, "port", "must be a TCP port"),
            (self.keepalive >= 5, "keepalive", "must be >= 5 s"),
            (
                1 <= self.reconnect_min_s <= self.reconnect_max_s,
                "reconnect_min_s",
                "must be >= 1 and <= broker.reconnect_max_s",
            ),
        ]


@dataclass
class TopicsConfig:
    """Topic pattern in (one '+' = the device id) and templates out."""

    sensors: str = "sensors/+/data"
    sensor_qos: int = 1
    alerts: str = "edgelstm/{gateway_id}/alerts/{device_id}"
    stats: str = "edgelstm/{gateway_id}/stats"
    status: str = "edgelstm/{gateway_id}/status"
    heartbeat: str = "edgelstm/{gateway_id}/heartbeat"  # echoed to prove the network thread runs
    feedback: str = "edgelstm/{gateway_id}/feedback/+"  # operator verdicts; '+' = the device id
    drift: str = "edgelstm/{gateway_id}/drift"  # drift summary, every drift.interval_s
    drift_events: str = "edgelstm/{gateway_id}/drift/{device_id}"  # drift raised/cleared, QoS 1

    def checks(self) -> list[Check]:
        return [
            (self.sensors.count("+") == 1, "sensors", "needs exactly one '+'"),
            ("#" not in self.sensors, "sensors", "'#' is not supported"),
            (self.feedback.count("+") == 1, "feedback", "needs exactly one '+' (the device id)"),
            ("#" not in self.feedback, "feedback", "'#' is not supported"),
            (self.sensor_qos in (0, 1, 2), "sensor_qos", "must be 0, 1 or 2"),
            ("{device_id}" in self.alerts, "alerts", "needs {device_id}"),
            ("{device_id}" in self.drift_events, "drift_events", "needs {device_id}"),
        ]


@dataclass
class BatchingConfig:
    """One backend call per round; rows = (device, open window) pairs."""

    max_batch: int = 2048  # rows per step call
    max_wait_ms: float = 1.0  # wait before a small round so readings share one call
    queue_size: int = 100_000  # messages waiting for the processing loop
    device_queue: int = 1_000  # readings waiting per device

    def checks(self) -> list[Check]:
        return [
            (self.max_batch >= 1, "max_batch", "must be >= 1"),
            (self.max_wait_ms >= 0, "max_wait_ms", "must be >= 0"),
            (self.queue_size >= 1, "queue_size", "must be >= 1"),
            (self.device_queue >= 1, "device_queue", "must be >= 1"),
        ]


@dataclass
class DebounceConfig:
    """Raise after k agreeing windows at confidence >= threshold; clear after k normal ones."""

    k: int = 3
    threshold: float = 0.6
    emit: str = "alerts"  # "alerts" or "all" (every window's result, for testing)
    results_qos: int = 0  # QoS of the per-window results of emit: all (alerts are always 1)

    def checks(self) -> list[Check]:
        return [
            (self.k >= 1, "k", "must be >= 1"),
            (0 <= self.threshold <= 1, "threshold", "must be in [0, 1]"),
            (self.emit in EMIT_MODES, "emit", f"must be one of {EMIT_MODES}"),
            (self.results_qos in (0, 1), "results_qos", "must be 0 or 1"),
        ]


@dataclass
class OutboxConfig:
    """The on-disk alert queue that survives restarts (SQLite in state_dir)."""

    max_rows: int = 100_000
    overflow: str = "drop_oldest"
    max_inflight: int = 1_000  # alerts handed to paho and not yet acknowledged
    # "normal": an alert survives a crash of the process; "full": also a power loss (fsync
    # on every alert, a few ms each on an SD card)
    synchronous: str = "normal"
    resend_after_s: float = 60.0  # an alert unacknowledged this long while connected is re-sent

    def checks(self) -> list[Check]:
        return [
            (self.max_rows >= 1, "max_rows", "must be >= 1"),
            (self.overflow in OVERFLOW_POLICIES, "overflow", f"must be one of {OVERFLOW_POLICIES}"),
            (
                1 <= self.max_inflight <= 60_000,
                "max_inflight",
                "must be in [1, 60000] (MQTT message ids wrap at 65535)",
            ),
            (
                self.synchronous in SYNCHRONOUS_MODES,
                "synchronous",
                f"must be one of {SYNCHRONOUS_MODES}",
            ),
            (self.resend_after_s > 0, "resend_after_s", "must be > 0"),
        ]


@dataclass
class LimitsConfig:
    """Bounds that keep memory flat whatever arrives (evictions and refusals are counted)."""

    max_devices: int = 10_000  # devices with state; a new one evicts the stalest idle device
    device_idle_s: float = 600.0  # a device silent this long may be evicted
    # ... and one that has not completed a window yet (a one-off or throwaway id) this long
    new_device_idle_s: float = 5.0
    max_device_id_bytes: int = 128  # longer device ids are refused
    max_queued_readings: int = 200_000  # readings parsed and not yet stepped, all devices

    def checks(self) -> list[Check]:
        return [
            (self.max_devices >= 1, "max_devices", "must be >= 1"),
            (self.device_idle_s > 0, "device_idle_s", "must be > 0"),
            (
                0 < self.new_device_idle_s <= self.device_idle_s,
                "new_device_idle_s",
                "must be > 0 and <= limits.device_idle_s",
            ),
            (
                1 <= self.max_device_id_bytes <= 60_000,
                "max_device_id_bytes",
                "must be in [1, 60000] (the alert topic must fit MQTT's 65535 bytes)",
            ),
            (self.max_queued_readings >= 1, "max_queued_readings", "must be >= 1"),
        ]


@dataclass
class LivenessConfig:
    """What the systemd watchdog is fed on: both threads making progress."""

    heartbeat_s: float = 2.0  # the processing loop publishes to topics.heartbeat this often
    stall_after_s: float = 10.0  # no heartbeat echo this long while connected = stalled

    def checks(self) -> list[Check]:
        return [
            (self.heartbeat_s > 0, "heartbeat_s", "must be > 0"),
            (
                self.stall_after_s > 2 * self.heartbeat_s,
                "stall_after_s",
                "must be more than 2 x liveness.heartbeat_s",
            ),
        ]


@dataclass
class DriftConfig:
    """The drift monitor (runtime/drift.py): each device's inputs against the training
    statistics in the manifest, the fleet's confidence and class mix against validation."""

    enabled: bool = True  # false: no monitor at all (zero cost per reading)
    interval_s: float = 60.0  # summary on topics.drift and the raise/clear decision this often
    # a device drifts when its largest feature mean shift (in spreads of the training runs'
    # block means, runtime/drift.py) stays above this ...
    threshold: float = 4.0
    clear_threshold: float = 3.0  # ... and stops when it stays below this ...
    for_s: float = 300.0  # ... for this long (checked every interval_s)
    min_readings: float = 500.0  # weighted readings a device needs before it is judged
    half_life_s: float = 600.0  # the running statistics forget older readings at this rate
    top_devices: int = 20  # devices listed in the summary and Prometheus (largest shift first)
    top_features: int = 3  # features listed per device (largest shift first)

    def checks(self) -> list[Check]:
        return [
            (self.interval_s > 0, "interval_s", "must be > 0"),
            (self.threshold > 0, "threshold", "must be > 0 (a mean shift in training spreads)"),
            (
                0 <= self.clear_threshold <= self.threshold,
                "clear_threshold",
                "must be >= 0 and <= drift.threshold",
            ),
            (self.for_s >= 0, "for_s", "must be >= 0"),
            (self.min_readings >= 1, "min_readings", "must be >= 1"),
            (self.half_life_s > 0, "half_life_s", "must be > 0"),
            (1 <= self.top_devices <= 1000, "top_devices", "must be in [1, 1000]"),
            (self.top_features >= 1, "top_features", "must be >= 1"),
        ]


@dataclass
class FeedbackConfig:
    """Operator verdicts on alerts and the readings kept around each alert (runtime/feedback.py,
    runtime/alert_buffer.py), in state_dir/feedback.sqlite3."""

    enabled: bool = False  # true: subscribe to topics.feedback and keep readings around alerts
    max_payload_bytes: int = 4_096  # longer feedback messages are dropped (counted)
    queue_size: int = 10_000  # feedback messages waiting for the processing loop
    before: int = 30  # readings kept before the window that raised an alert
    after: int = 30  # readings kept after it
    max_rows: int = 200_000  # readings kept for all alerts on disk; the oldest alerts go first
    max_alerts: int = 100_000  # alerts (and verdicts) kept on disk; the oldest go first

    def checks(self) -> list[Check]:
        return [
            (self.max_payload_bytes >= 64, "max_payload_bytes", "must be >= 64"),
            (self.queue_size >= 1, "queue_size", "must be >= 1"),
            (self.before >= 0, "before", "must be >= 0 (readings)"),
            (self.after >= 0, "after", "must be >= 0 (readings)"),
            (self.max_rows >= 1, "max_rows", "must be >= 1"),
            (self.max_alerts >= 1, "max_alerts", "must be >= 1"),
        ]


INPUT_MODES = ("mqtt", "amqp")
AMQP_MAX_PREFETCH = 65_535  # basic.qos prefetch_count is an unsigned 16-bit field


@dataclass
class AmqpInputConfig:
    """Where a worker of a sharded gateway takes its readings (deploy/rabbitmq/README.md).

    Shard k of n consumes queue `<queue_prefix>.<k>` at once and, after `standby_delay_s`, the
    `standby` queues after it as a standby: each queue has x-single-active-consumer, so the
    broker hands a queue to its standby only when its worker's connection is gone."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue_prefix: str = QUEUE_PREFIX
    shard: int = 0
    shards: int = 1
    # following shards (k+1, k+2, ... mod n) this worker stands by for; at most shards - 1
    standby: int = 1
    standby_delay_s: float = 3.0  # so that every primary registers first at a cold start
    # unacknowledged messages the broker may hand this worker per queue: a message is acked
    # only once all windows holding its readings closed, so this must exceed
    # devices per queue x (ceil(window / readings per message) + 1)
    prefetch: int = 60_000  # ~980 devices per queue for W = 60 and one reading a message
    heartbeat_s: int = 10  # AMQP heartbeat: a dead worker is noticed within ~2 of these
    reconnect_s: float = 2.0

    def checks(self) -> list[Check]:
        return [
            (
                self.url.startswith(("amqp://", "amqps://")),
                "url",
                "must start with amqp:// or amqps:// (amqp://user:password@host:5672/vhost)",
            ),
            (bool(self.queue_prefix), "queue_prefix", "must not be empty"),
            (self.shards >= 1, "shards", "must be >= 1"),
            (0 <= self.shard < self.shards, "shard", "must be in [0, input.amqp.shards)"),
            (self.standby >= 0, "standby", "must be >= 0 (0: no failover for this shard)"),
            (self.standby_delay_s >= 0, "standby_delay_s", "must be >= 0"),
            (
                1 <= self.prefetch <= AMQP_MAX_PREFETCH,
                "prefetch",
                f"must be in [1, {AMQP_MAX_PREFETCH}] (AMQP's prefetch_count is 16 bits)",
            ),
            (self.heartbeat_s >= 0, "heartbeat_s", "must be >= 0 (0 turns heartbeats off)"),
            (self.reconnect_s > 0, "reconnect_s", "must be > 0"),
        ]

    def queue(self, shard: int) -> str:
        return f"{self.queue_prefix}.{shard % self.shards}"

    @property
    def primary_queue(self) -> str:
        return self.queue(self.shard)

    @property
    def standby_queues(self) -> list[str]:
        return [
            self.queue(self.shard + i) for i in range(1, min(self.standby, self.shards - 1) + 1)
        ]


@dataclass
class InputConfig:
    """Where readings come from: `mqtt` (the sensor subscription, the default) or `amqp` (one
    shard of a broker that pins each device to one queue; alerts, stats and status stay MQTT)."""

    mode: str = "mqtt"
    amqp: AmqpInputConfig = field(default_factory=AmqpInputConfig)

    def checks(self) -> list[Check]:
        own = [(self.mode in INPUT_MODES, "mode", f"must be one of {INPUT_MODES}")]
        return own + [(ok, f"amqp.{key}", why) for ok, key, why in self.amqp.checks()]


@dataclass
class GatewayConfig:
    """Everything `edgelstm serve` needs; loaded from YAML and overridden from the CLI."""

    model_dir: Path
    gateway_id: str = "gateway"
    backend: str = "onnxruntime"
    artifact: str = "step"
    threads: int = 1
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    debounce: DebounceConfig = field(default_factory=DebounceConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    input: InputConfig = field(default_factory=InputConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    state_dir: Path = Path("state")
    sample_period_s: float | None = None  # default: the manifest's sample period
    gap_tolerance: float = 0.5  # a step over (1 + this) periods means readings went missing
    loss_warn_rate: float = 0.01  # warn when this fraction of readings went missing
    max_payload_bytes: int = 65_536
    stats_interval_s: float = 10.0
    prometheus_port: int | None = None
    # where /metrics listens: loopback by default; 0.0.0.0 (or the LAN address) lets a central
    # Prometheus scrape the gateway (open the port in the firewall only to that server)
    prometheus_host: str = "127.0.0.1"
    log_every_s: float = 10.0  # bad-input log lines at most once per reason per this period
    source: str = "<config>"

    def topic(self, template: str, device_id: str = "") -> str:
        return template.format(gateway_id=self.gateway_id, device_id=device_id)

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"edgelstm-{self.gateway_id}"

    def validate(self) -> None:
        """Raises ConfigError naming the first key whose value cannot work."""
        checks = self._checks()
        for name in (
            "broker",
            "topics",
            "batching",
            "debounce",
            "outbox",
            "limits",
            "liveness",
            "input",
            "feedback",
            "drift",
        ):
            checks += [(ok, f"{name}.{key}", why) for ok, key, why in getattr(self, name).checks()]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{self.source}: {key}: {message}")

    def _checks(self) -> list[Check]:
        longest_alert_topic = (
            len(self.topic(self.topics.alerts).encode()) + self.limits.max_device_id_bytes
        )
        return [
            (self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}"),
            (self.threads >= 1, "threads", "must be >= 1"),
            (
                longest_alert_topic <= MQTT_MAX_TOPIC_BYTES,
                "limits.max_device_id_bytes",
                f"with topics.alerts the alert topic may reach {longest_alert_topic} bytes; "
                f"MQTT allows {MQTT_MAX_TOPIC_BYTES}",
            ),
            (
                self.sample_period_s is None or self.sample_period_s > 0,
                "sample_period_s",
                "must be > 0 or null",
            ),
            (0 < self.gap_tolerance < 1, "gap_tolerance", "must be in (0, 1)"),
            (0 < self.loss_warn_rate <= 1, "loss_warn_rate", "must be in (0, 1]"),
            (self.max_payload_bytes >= 64, "max_payload_bytes", "must be >= 64"),
            (self.stats_interval_s > 0, "stats_interval_s", "must be > 0"),
            (
                self.prometheus_port is None or 0 < self.prometheus_port < 65536,
                "prometheus_port",
                "must be a TCP port or null",
            ),
            (
                bool(self.prometheus_host.strip()),
                "prometheus_host",
                "must be an address to listen on (127.0.0.1, 0.0.0.0 or a LAN address)",
            ),
            (self.log_every_s >= 0, "log_every_s", "must be >= 0"),
        ]


_SCALARS: dict[type, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
    Path: (str,),
}


def _build(cls: type, raw: Any, where: str, source: str) -> Any:
    """Instantiates a config dataclass from a mapping, refusing unknown keys and wrong types;
    what each key accepts is read from the dataclass's own type hints."""
    label = where or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {label}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(
            f"{source}: {where + '.' if where else ''}{unknown[0]}: unknown key "
            "(check the spelling against configs/gateway.yaml)"
        )
    values = {
        name: _value(hints[name], value, f"{where}.{name}" if where else name, source)
        for name, value in raw.items()
    }
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {label}: {exc}") from None


def _value(hint: Any, value: Any, key: str, source: str) -> Any:
    """One key's value checked against its type hint (`T`, or `T | None`)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kind = next(t for t in options if t is not type(None))
    if value is None:
        if type(None) not in options:
            raise ConfigError(f"{source}: {key}: must not be null")
        return None
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, key, source)
    accepted = _SCALARS[kind]
    if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> GatewayConfig:
    """Validates a parsed gateway config; `model_dir` is required."""
    if not isinstance(raw, dict) or "model_dir" not in raw or raw["model_dir"] is None:
        raise ConfigError(f"{source}: model_dir: required key is missing")
    cfg = _build(GatewayConfig, raw, "", source)
    cfg.source = source
    cfg.validate()
    return cfg


def load_gateway_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> GatewayConfig:
    """Reads YAML (or starts empty when path is None) and applies dotted-key overrides.

    `overrides` maps dotted keys to values, e.g. {"broker.host": "10.0.0.2", "model_dir": d},
    so CLI flags win over the file.
    """
    raw: dict[str, Any] = {}
    source = "<command line>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: gateway config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = str(value) if isinstance(value, Path) else value
    return config_from_dict(raw, source)


def parse_host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or 'HOST', port 1883) as given to --broker."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--broker {text!r}: expected HOST:PORT") from None
    if not host or not 0 < number < 65536:
        raise ConfigError(f"--broker {text!r}: expected HOST:PORT")
    return host, number
