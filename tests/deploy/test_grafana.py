"""deploy/grafana/edgelstm.json is a dashboard Grafana imports, and every metric it queries is
one a real, torch-free `edgelstm serve` exports on its Prometheus endpoint.

Metric names come out of each PromQL expr with a small tokenizer (`metric_names`): it drops
string literals, label matchers `{...}`, range and subquery brackets `[...]`, grouping clauses
(`by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left (...)`,
`group_right (...)`), Grafana variables (`$gateway`, `${x}`) and numbers/durations (`20`,
`1e3`, `5m`); of the identifiers left, one followed by `(` is a function or aggregation and
PromQL keywords (`and`, `or`, `unless`, `bool`, `offset`, ...) are skipped; the rest are
metric names.

Which names must be in the scrape: the gateway's plain counters (`edgelstm_<name>_total`)
come into being on their first event, and the test cannot cause every one (each invalid or
dropped reason, an alert clear, a drift clear). It makes the common ones happen (readings,
windows, messages, alerts, two invalid reasons, a drift raise, a verdict) and lets a counter
that is absent pass only when the code declares it: runtime/parse.py's and runtime/feedback.py's
reason enums, the string names of the `stats.count(...)` calls under runtime/ (read with
`ast`), and the drift event kinds.
Gauges, labelled gauges and counters (drift, feedback, backend) and the latency Summaries
(base name, always exported with `_count`/`_sum`) must be in the scrape itself.
`edgelstm_gpu_memory_bytes` is exported only by GPU backends: absent on this CPU gateway.
"""

from __future__ import annotations

import ast
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_lstm.local_broker import LocalBroker, find_mosquitto, free_port
from runtime.feedback import FeedbackReason
from runtime.manifest import Manifest
from runtime.parse import Reason
from runtime.replay import Replayer, device_ids
from tests.runtime.helpers import Collector, ServeProcess, gateway_config, select_runs, wait_until

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "edgelstm.json"
# only a GPU backend (runtime/health.py: not for CPU_BACKENDS) exports it; CPU serves here
GPU_ONLY = {"edgelstm_gpu_memory_bytes"}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")  # 20, 0.5, 1e3, 5m, 1h30m
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (see the module docstring)."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group()
        if name.lower() in KEYWORDS or re.match(r"\s*\(", text[match.end() :]):
            continue  # a keyword, or a function / aggregation call
        names.add(name)
    return names


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queried(dashboard: dict) -> dict[str, set[str]]:
    """metric name -> titles of the panels that query it."""
    out: dict[str, set[str]] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                out.setdefault(name, set()).add(panel["title"])
    return out


def _counted(node: ast.AST) -> list[str]:
    """The counter names of a `self.count(...)` / `stats.count(...)` / `x.stats.count(...)`
    call: its first argument when a string, or both strings of `"a" if cond else "b"`."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute)):
        return []
    owner = node.func.value
    if node.func.attr != "count" or not (
        (isinstance(owner, ast.Name) and owner.id in ("self", "stats"))
        or (isinstance(owner, ast.Attribute) and owner.attr == "stats")
    ):
        return []
    arg = node.args[0]
    choices = [arg.body, arg.orelse] if isinstance(arg, ast.IfExp) else [arg]
    return [c.value for c in choices if isinstance(c, ast.Constant) and isinstance(c.value, str)]


def declared_counters() -> set[str]:
    """`edgelstm_<name>_total` of every counter name the gateway's code can bump."""
    names = {r.counter for r in Reason} | {r.counter for r in FeedbackReason}
    for source in (REPO / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names.update(_counted(node))
    drift = (REPO / "runtime" / "drift.py").read_text()
    kinds = re.search(r'kind = "(\w+)" if .* else "(\w+)"', drift)
    assert kinds, "runtime/drift.py no longer names its event kinds the way this test reads them"
    assert "count(f\"drift_{body['event']}\")" in drift  # drift_raised, drift_cleared
    names.update(f"drift_{kind}" for kind in kinds.groups())
    return {f"edgelstm_{name}_total" for name in names}


def exported(text: str) -> set[str]:
    """Family names and sample names of a /metrics text (a counter family is named without
    `_total` by the parser, its samples with it; a Summary's family is the base name)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def missing(wanted: set[str], scraped: set[str], declared: set[str]) -> dict[str, str]:
    """name -> why, for every dashboard metric the gateway does not export."""
    out = {}
    for name in sorted(wanted - scraped - GPU_ONLY):
        if name in declared:
            continue  # a counter that exists from its first event on (module docstring)
        out[name] = "not in /metrics" + (
            "" if name.startswith(("edgelstm_", "process_")) else " (not a gateway metric)"
        )
    return out


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_is_a_grafana_import() -> None:
    dash = _dashboard()
    assert 30 <= dash["schemaVersion"] <= 41
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    (gateway,) = [v for v in dash["templating"]["list"] if v["name"] == "gateway"]
    assert re.search(r"label_values\(\w+, *(instance|job)\)", gateway["definition"])
    all_panels = panels(dash)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels:
        assert panel.get("title"), panel
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= pos.keys() and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and "$gateway" in target["expr"], panel["title"]
            assert metric_names(target["expr"]), (panel["title"], target["expr"])
    # no two panels overlap
    cells = set()
    for panel in all_panels:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_the_extractor_finds_names_and_the_checker_reports_unknown_ones() -> None:
    expr = (
        'sum by (instance, class) (rate(edgelstm_readings_total{instance=~"$gateway",'
        ' job="a{b}"}[$__rate_interval])) / on (instance) group_left (model)'
        " max without (le) (edgelstm_backend_info offset 5m) * 1e3 > bool 0.5"
        ' or histogram_quantile(0.99, edgelstm_latency_infer_seconds{quantile="0.99"}[1h:5m])'
    )
    assert metric_names(expr) == {
        "edgelstm_readings_total",
        "edgelstm_backend_info",
        "edgelstm_latency_infer_seconds",
    }
    fake = 'rate(edgelstm_no_such_metric_total{instance=~"$gateway"}[5m]) + up'
    scraped = {"edgelstm_readings_total", "edgelstm_readings"}
    found = missing(metric_names(fake) | {"edgelstm_readings_total"}, scraped, declared_counters())
    assert set(found) == {"edgelstm_no_such_metric_total", "up"}
    assert "edgelstm_gpu_memory_bytes" not in missing(GPU_ONLY, set(), set())
    # a declared counter passes before its first event; a gauge never passes that way
    assert "edgelstm_clears_total" in declared_counters()
    assert "edgelstm_invalid_not_json_total" in declared_counters()
    assert "edgelstm_queue" not in declared_counters()


def _scrape(port: int, attempts: int = 20) -> str:
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                return reply.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    if find_mosquitto() is None:
        pytest.skip("needs a mosquitto binary (apt-get install mosquitto)")
    with LocalBroker(persistence_dir=tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.mark.broker
def test_every_queried_metric_is_exported_by_a_real_gateway(
    broker, tiny_deploy_dir, tiny_data, tmp_path
) -> None:
    wanted = queried(_dashboard())
    declared = declared_counters()
    manifest = Manifest.load(tiny_deploy_dir)
    port = free_port()
    config = gateway_config(
        tmp_path / "gw.yaml",
        tiny_deploy_dir,
        broker.host,
        broker.port,
        prometheus_port=port,
        stats_interval_s=0.3,
        debounce={"k": 2, "threshold": 0.0},  # alerts raised on the untrained model
        # judged after one reading, raised at once: drift_raised and the PSI families appear
        drift={
            "interval_s": 0.3,
            "min_readings": 1,
            "threshold": 0.001,
            "clear_threshold": 0.0,
            "for_s": 0,
        },
        feedback={"enabled": True, "before": 5, "after": 5},
    )
    runs = select_runs(tiny_data, manifest, count=2, length=120)  # windows close on both
    collector = Collector(broker.host, broker.port)
    serve = ServeProcess(config, tmp_path)
    scraped: set[str] = set()
    try:
        assert collector.wait_status("online", 30, serve), serve.tail()
        readings = Replayer(broker.host, broker.port, qos=1)
        readings.replay(device_ids(runs, len(runs)))
        readings.send("junk", b"not json")  # invalid_not_json
        readings.send("junk", b'{"ts": 1}')  # invalid_bad_schema
        readings.close()
        assert wait_until(lambda: len(collector.bodies("raised")) >= 1, 20), serve.tail()
        alert = collector.bodies("raised")[0]
        verdicts = Replayer(broker.host, broker.port, "edgelstm/test/feedback/{device_id}", 1)
        verdict = {"alert_id": alert["alert_id"], "verdict": "confirmed", "by": "test"}
        verdicts.send(alert["device_id"], json.dumps(verdict).encode())
        verdicts.close()

        def all_there() -> bool:
            nonlocal scraped
            scraped = exported(_scrape(port))
            return (
                not missing(set(wanted), scraped, declared)
                and {
                    "edgelstm_feedback_verdicts_total",
                    "edgelstm_class_share",
                    "edgelstm_drift_raised_total",
                }
                <= scraped
            )

        wait_until(all_there, 20, step_s=0.3)
    finally:
        assert serve.stop() == 0, serve.tail()
        collector.close()
    gaps = missing(set(wanted), scraped, declared)
    assert not gaps, {name: (why, sorted(wanted[name])) for name, why in gaps.items()}
    # only counters may pass by declaration; the ones the run made happen must be scraped
    by_declaration = set(wanted) - scraped - GPU_ONLY
    assert all(name.endswith("_total") for name in by_declaration), by_declaration
    for name in (
        "edgelstm_readings_total",
        "edgelstm_windows_total",
        "edgelstm_messages_total",
        "edgelstm_alerts_total",
        "edgelstm_invalid_not_json_total",
        "edgelstm_invalid_bad_schema_total",
        "edgelstm_feedback_verdicts_total",
        "edgelstm_drift_psi",
        "edgelstm_class_share",
        "edgelstm_feedback_precision",
    ):
        assert name in scraped, name
    # explicit: a CPU backend exports no GPU memory; the dashboard's GPU series stays empty
    assert "edgelstm_gpu_memory_bytes" not in scraped
