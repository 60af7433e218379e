"""Benchmark: resident memory of `edgelstm serve` against the number of distinct device ids.

Every new device id costs the gateway state (queues, open windows, recurrent state), so a
bridge that invents ids, or a fleet bigger than planned, would grow it until systemd's
MemoryMax kills it. `limits.max_devices` bounds the devices with state: past it a new id
evicts a device silent for `device_idle_s` (`new_device_idle_s` for one that never completed a
window, as every id here) or its readings are refused (`evicted_devices`,
`dropped_device_limit`). This publishes ONE reading from each of N distinct ids in steps
(QoS 0, paced so the broker drops nothing) and records VmRSS once the gateway's stats show the
step processed; with the cap, memory stops growing at max_devices.

`python -m bench.rss [--runs runs/demo] [--model-dir DIR] [--devices 100000]` prints a table
and writes bench/rss.json; `python -m bench.run --only rss` runs it with the others.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.common import TOPIC, close, flush, publisher, start_gateway
from bench.run import argument_parser
from edge_lstm.local_broker import LocalBroker
from edge_lstm.reporting.gateway_harness import Gateway, rss_mb
from runtime.config import LimitsConfig
from runtime.manifest import Manifest
from runtime.parse import encode_json

log = logging.getLogger(__name__)

OUT = Path(__file__).with_name("rss.json")
STEPS = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000)
MAX_DEVICES = 10_000
DEVICE_IDLE_S = 600.0  # longer than the run; one-reading ids go after new_device_idle_s
RATE_PER_S = 5_000.0  # messages/s: well below what the gateway parses, so nothing queues up
PACE_EVERY = 100  # messages between two checks of the publish schedule
STATS_INTERVAL_S = 0.5


def steps_for(devices: int, max_devices: int) -> list[int]:
    """Cumulative id counts to measure at: the standard marks below `devices`, the cap, the end."""
    marks = {s for s in STEPS if s < devices} | {devices}
    if len(marks) < 3:
        marks |= {devices // 4, devices // 2}
    if max_devices < devices:
        marks.add(max_devices)
    return sorted(m for m in marks if m > 0)


def _publish_ids(client, start: int, stop: int, payload: bytes, rate: float) -> None:
    """One reading from each of ids start..stop-1, `rate` messages/s."""
    began = time.perf_counter()
    for i in range(start, stop):
        client.publish(TOPIC.format(f"d{i}"), payload, 0)
        if i % PACE_EVERY == 0:
            ahead = began + (i - start) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    flush(client)


def _wait_processed(gateway: Gateway, sent: int, timeout_s: float) -> dict[str, Any]:
    """The first stats snapshot taken after all `sent` messages had arrived (a later one than
    the snapshot that first counted them, so the last is out of the inbox) with nothing queued."""
    deadline = time.monotonic() + timeout_s
    counted_at: int | None = None
    while time.monotonic() < deadline:
        stats = gateway.recorder.of_kind("stats")
        snaps, snap = len(stats), stats[-1].body
        if counted_at is None and snap["counters"].get("messages", 0) >= sent:
            counted_at = snaps
        elif counted_at is not None and snaps > counted_at and not snap["gauges"].get("queue"):
            return snap
        time.sleep(0.02)
    got = gateway.recorder.latest_stats()["counters"].get("messages", 0)
    raise RuntimeError(f"the gateway counted {got} of {sent} messages within {timeout_s:.0f} s")


def measure(
    deploy: Path,
    workdir: Path,
    devices: int,
    max_devices: int = MAX_DEVICES,
    rate: float = RATE_PER_S,
) -> dict[str, Any]:
    """Baseline RSS once online, then RSS after each step of new ids."""
    started = time.monotonic()
    with LocalBroker() as broker:
        gateway = start_gateway(
            workdir,
            deploy,
            broker,
            stats_interval_s=STATS_INTERVAL_S,
            limits={"max_devices": max_devices, "device_idle_s": DEVICE_IDLE_S},
        )
        client = publisher(broker.host, broker.port)
        try:
            time.sleep(2 * STATS_INTERVAL_S)  # let start-up allocations settle
            baseline = rss_mb(gateway.pid)
            steps = _steps(gateway, client, Manifest.load(deploy), devices, max_devices, rate)
            model = gateway.recorder.latest_stats().get("model")
        finally:
            close(client)
            gateway.stop()
    reference = next((s for s in steps if s["ids_sent"] >= max_devices), None)
    for step in steps:
        step["ratio_to_baseline"] = round(step["rss_mb"] / baseline, 3)
        step["growth_from_cap_mb"] = (
            round(step["rss_mb"] - reference["rss_mb"], 1)
            if reference is not None and step["ids_sent"] >= reference["ids_sent"]
            else None
        )
    last = steps[-1]
    return {
        "model": model,
        "max_devices": max_devices,
        "device_idle_s": DEVICE_IDLE_S,
        "new_device_idle_s": LimitsConfig().new_device_idle_s,
        "publish_rate_per_s": rate,
        "baseline_rss_mb": round(baseline, 1),
        "cap_point_ids": reference["ids_sent"] if reference else None,
        "steps": steps,
        "capped": last["devices"] is not None and last["devices"] <= max_devices,
        "growth_after_cap_mb": last["growth_from_cap_mb"],
        "seconds": round(time.monotonic() - started, 1),
    }


def _steps(
    gateway: Gateway, client, manifest: Manifest, devices: int, max_devices: int, rate: float
) -> list[dict[str, Any]]:
    """Publishes new ids step by step; the gateway's devices, RSS and refusals after each."""
    steps: list[dict[str, Any]] = []
    sent = 0
    for target in steps_for(devices, max_devices):
        t0 = time.monotonic()
        payload = encode_json(time.time(), list(manifest.norm_mean))
        _publish_ids(client, sent, target, payload, rate)
        timeout_s = 30 + (target - sent) / rate
        sent = target
        snap = _wait_processed(gateway, sent, timeout_s)
        counters, gauges = snap["counters"], snap["gauges"]
        steps.append(
            {
                "ids_sent": sent,
                "devices": gauges.get("devices"),
                "rss_mb": round(rss_mb(gateway.pid), 1),
                "dropped_device_limit": counters.get("dropped_device_limit", 0),
                "evicted_devices": counters.get("evicted_devices", 0),
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
        log.info("rss: %s", steps[-1])
    return steps


def table(result: dict[str, Any]) -> str:
    """The figures as a fixed-width table, one row per step."""
    cap = result["cap_point_ids"]
    header = (
        f"{'ids sent':>9} {'devices':>8} {'RSS MB':>8} {'x baseline':>10} "
        f"{'+MB from ' + (f'{cap:,}' if cap else 'cap'):>15} {'refused':>8} {'evicted':>8}"
    )
    rows = [f"baseline RSS {result['baseline_rss_mb']:.1f} MB (online, no device)", header]
    for s in result["steps"]:
        growth = "-" if s["growth_from_cap_mb"] is None else f"{s['growth_from_cap_mb']:+.1f}"
        devices = "-" if s["devices"] is None else f"{s['devices']:,.0f}"
        rows.append(
            f"{s['ids_sent']:>9,} {devices:>8} {s['rss_mb']:>8.1f} "
            f"{s['ratio_to_baseline']:>10.2f} {growth:>15} "
            f"{s['dropped_device_limit']:>8,} {s['evicted_devices']:>8,}"
        )
    return "\n".join(rows)


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """bench.run's entry point: the demo's deployment folder, 100k ids (20k when quick)."""
    runs_dir = Path(runs_dir)
    devices = 2 * MAX_DEVICES if quick else STEPS[-1]
    return measure(runs_dir / "deploy", runs_dir / "bench-rss", devices)


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__.splitlines()[0], quick=False)
    parser.add_argument("--model-dir", type=Path, help="deployment folder (default RUNS/deploy)")
    parser.add_argument("--devices", type=int, default=STEPS[-1], help="distinct ids in all")
    parser.add_argument("--max-devices", type=int, default=MAX_DEVICES)
    parser.add_argument("--rate", type=float, default=RATE_PER_S, help="messages/s")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = measure(
        args.model_dir or args.runs_dir / "deploy",
        args.runs_dir / "bench-rss",
        args.devices,
        args.max_devices,
        args.rate,
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
