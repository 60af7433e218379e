"""The broker side of a sharded gateway: what RabbitMQ must hold so each device has one worker.

Devices publish MQTT as before; RabbitMQ's MQTT plugin turns `sensors/<device>/data` into the
routing key `sensors.<device>.data` on `amq.topic`. An exchange-to-exchange binding on
`sensors.#.data` hands those to an `x-consistent-hash` exchange, which spreads routing keys
(so devices) over N queues, each bound with the same weight. Every queue is durable and has
`x-single-active-consumer`: one worker at a time gets its messages, in order, and when that
worker's connection goes the broker moves the queue, unacknowledged messages first, to the
next consumer (its standby). Adding a queue moves about 1/(N+1) of the devices.

One description (`definitions`) serves both ways of installing it: `declare` applies it over
AMQP (idempotent; what the tests and `python -m runtime.amqp_topology` do), and the same dict
is RabbitMQ's definitions format (deploy/rabbitmq/definitions.json, `load_definitions`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXCHANGE = "edgelstm.shards"
SOURCE_EXCHANGE = "amq.topic"  # where the MQTT plugin publishes
# MQTT `sensors/+/data` as the MQTT plugin routes it: every '/' becomes '.' and a device id
# keeps its own dots (`sensors/pump.7/data` -> `sensors.pump.7.data`), so one `*` would miss it
SENSOR_BINDING = "sensors.#.data"
QUEUE_PREFIX = "edgelstm.shard"
# points on the hash ring per queue: more points, more even shares (the plugin's README)
WEIGHT = 100
# readings kept per queue while its workers are all away; beyond it the oldest are dropped
# (the gateway then counts the gap) rather than the broker running out of memory
MAX_QUEUE_LENGTH = 2_000_000
VHOST = "/"


def queue_arguments() -> dict[str, Any]:
    return {
        "x-single-active-consumer": True,
        "x-queue-type": "classic",
        "x-max-length": MAX_QUEUE_LENGTH,
        "x-overflow": "drop-head",
    }


def queue_names(shards: int, prefix: str = QUEUE_PREFIX) -> list[str]:
    return [f"{prefix}.{i}" for i in range(shards)]


def definitions(shards: int, prefix: str = QUEUE_PREFIX) -> dict[str, Any]:
    """The topology in RabbitMQ's definitions format (exchanges, queues, bindings)."""
    queues = queue_names(shards, prefix)
    common = {"vhost": VHOST, "durable": True, "auto_delete": False}
    return {
        "exchanges": [
            {"name": EXCHANGE, "type": "x-consistent-hash", **common, "internal": False,
             "arguments": {}},
        ],
        "queues": [{"name": q, **common, "arguments": queue_arguments()} for q in queues],
        "bindings": [
            {"source": SOURCE_EXCHANGE, "vhost": VHOST, "destination": EXCHANGE,
             "destination_type": "exchange", "routing_key": SENSOR_BINDING, "arguments": {}},
        ] + [
            {"source": EXCHANGE, "vhost": VHOST, "destination": q, "destination_type": "queue",
             "routing_key": str(WEIGHT), "arguments": {}}
            for q in queues
        ],
    }  # fmt: skip


def declare(url: str, shards: int, prefix: str = QUEUE_PREFIX) -> list[str]:
    """Declares `definitions(shards, prefix)` on the broker at `url`; returns the queue names.
    Declaring what exists is a no-op; a queue that exists with other arguments is refused by
    the broker (PRECONDITION_FAILED), naming it."""
    import pika

    spec = definitions(shards, prefix)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for ex in spec["exchanges"]:
            channel.exchange_declare(ex["name"], ex["type"], durable=True)
        for q in spec["queues"]:
            channel.queue_declare(q["name"], durable=True, arguments=q["arguments"])
        for b in spec["bindings"]:
            if b["destination_type"] == "exchange":
                channel.exchange_bind(b["destination"], b["source"], b["routing_key"])
            else:
                channel.queue_bind(b["destination"], b["source"], b["routing_key"])
    finally:
        connection.close()
    return [q["name"] for q in spec["queues"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.amqp_topology",
        description="Declare (or print) the RabbitMQ topology of a sharded gateway.",
    )
    parser.add_argument("--shards", type=int, required=True, help="number of queues (workers)")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--prefix", default=QUEUE_PREFIX, help="queue name prefix")
    parser.add_argument(
        "--print", action="store_true", help="print the definitions JSON instead of declaring"
    )
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error("--shards must be >= 1")
    if args.print:
        json.dump(definitions(args.shards, args.prefix), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for name in declare(args.url, args.shards, args.prefix):
        print(f"declared {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
