"""The throughput benchmark's baseline: a bare paho subscriber that only parses messages.

    python -m bench.bare_subscriber HOST PORT EXPECTED MODEL_DIR PROTOCOL

Subscribes to bare/+/data, prints `ready`, then counts messages (and those the runtime's
parser refuses) until EXPECTED arrived or 120 s passed, and prints one JSON line:
{"n", "bad", "last" (wall time of the last message), "cpu_s" (process CPU while receiving)}.
PROTOCOL is 5 or 311: paho decodes MQTT v5 properties on every message, a cost the gateway (v5
by default) pays too, so the baseline speaks the gateway's protocol and a v3.1.1 run shows what
v5 costs. A process of its own, so its GIL is not the benchmark's. Not a benchmark
(bench/run.py skips it).
"""

from __future__ import annotations

import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runtime.manifest import Manifest
from runtime.parse import Parser, Reason

TOPIC = "bare/+/data"
DEADLINE_S = 120.0


def main(argv: list[str] | None = None) -> None:
    host, port, expected, model_dir, protocol = argv or sys.argv[1:]
    parser = Parser(Manifest.load(model_dir).features, 65536)
    state: dict = {"n": 0, "bad": 0, "last": None}

    def on_message(client, userdata, msg) -> None:
        if isinstance(parser.parse(msg.payload), Reason):
            state["bad"] += 1
        state["n"] += 1
        state["last"] = time.time()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    )
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, 0)
    client.connect(host, int(port))
    client.loop_start()
    print("ready", flush=True)
    cpu0 = time.process_time()
    deadline = time.time() + DEADLINE_S
    while state["n"] < int(expected) and time.time() < deadline:
        time.sleep(0.005)
    state["cpu_s"] = time.process_time() - cpu0
    print(json.dumps(state), flush=True)


if __name__ == "__main__":
    main()
