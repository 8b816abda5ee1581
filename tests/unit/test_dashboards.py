"""The five generated Grafana dashboards: UIDs, variables, links, filters, units, bands, real promtool parsing."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qm_otel.cli.render.dashboards import BOARDS, DASHBOARDS, band_thresholds
from qm_otel.cli.render.dashboards.overview import RUNTIME
from qm_otel.cli.render.dashboards.panels import COLOURS, alert_thresholds
from qm_otel.cli.render.dashboards.performance import LAG, STALLS
from qm_otel.core import instruments
from qm_otel.core.conventions import Band, Conventions, conventions
from qm_otel.runtime import process_metrics
from tests.integration.test_prometheus_workers import otlp_to_prometheus
from tests.unit.test_conventions import EDGES
from tests.unit.test_render import colour_of

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                    reason="promtool (Debian package prometheus) not installed")
UIDS = {
    "dashboards/qm-otel-service.json": "qm-otel-service",
    "dashboards/qm-otel-logs-traces.json": "qm-otel-logs-traces",
    "dashboards/qm-otel-breakers.json": "qm-otel-breakers",
    "dashboards/qm-otel-conventions.json": "qm-otel-conventions",
    "dashboards/qm-otel-pipeline.json": "qm-otel-pipeline",
}
#: the variables the integration test substitutes (and promtool needs substituted)
SUBSTITUTIONS = {"$service": ".*", "$collector": ".*", "$__rate_interval": "1m", "$__interval": "1m",
                 "$__range": "1m"}
#: the collector version the otelcol_* names were checked against (its metadata.yaml files, and the
#: Prometheus reader defaults without_units/without_type_suffix applied to an explicit pull reader):
#: opentelemetry-collector v0.159.0 receiver/receiverhelper, exporter/exporterhelper, service and
#: processor/memorylimiterprocessor metadata.yaml; since v0.155.0 (#15167) the memory limiter's
#: counters are otelcol_processor_memory_limiter_{accepted,refused}_* (otelcol_processor_refused_* gone)
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.159.0"
COLLECTOR_METRICS = {
    f"otelcol_receiver_{outcome}_{signal}" for outcome in ("accepted", "refused", "failed")
    for signal in ("spans", "metric_points", "log_records")
} | {
    f"otelcol_exporter_{outcome}_{signal}" for outcome in ("sent", "send_failed", "enqueue_failed")
    for signal in ("spans", "metric_points", "log_records")
} | {f"otelcol_processor_memory_limiter_refused_{signal}" for signal in ("spans", "metric_points", "log_records")} | {
    "otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity", "otelcol_process_memory_rss",
    "otelcol_process_uptime",
}
#: Grafana unit ids the dashboards may use (Grafana's valueFormats: mbytes is MiB, decmbytes is SI MB)
UNITS = {"short", "reqps", "cps", "percent", "percentunit", "s", "ms", "mbytes", "bytes"}
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")


def runtime_metric_names() -> set[str]:
    """What the runtime emits: the Prometheus names in instruments.py's table plus the HTTP server metrics."""
    table = re.findall(r"^\|\s*``[\w.]+``\s*\|\s*``(\w+)``", instruments.__doc__ or "", re.MULTILINE)
    assert len(table) >= 13
    histogram = "http_server_request_duration_seconds"
    return {*table, f"{histogram}_count", f"{histogram}_bucket", "http_server_active_requests"}


#: the event-loop watchdog's instruments (issue 25's contract: name, unit, kind, monotonic) and their
#: histogram series, as Prometheus's OTLP receiver names them
EVENT_LOOP_INSTRUMENTS = [("qm_otel.event_loop.lag", "s", "histogram", None),
                          ("qm_otel.event_loop.blocked", "{stall}", "sum", True)]
EVENT_LOOP_METRICS = {f"{LAG}_{part}" for part in ("bucket", "sum", "count")} | {STALLS}
#: the process and CPython metrics the runtime-metrics feature reports through the contrib
#: system-metrics instrumentation (test_the_runtime_panels_chart_what_the_instrumentation_reports)
SYSTEM_METRICS = set(RUNTIME.values())
#: the instrumentation's metrics the runtime-metrics feature keeps (issue 25, item 1): qm-otel's own selection
SYSTEM_CONFIG = dict(process_metrics.CONFIG)
METRICS = runtime_metric_names() | COLLECTOR_METRICS | EVENT_LOOP_METRICS | SYSTEM_METRICS


def committed() -> dict[str, dict[str, Any]]:
    return {path: json.loads((ROOT / path).read_text()) for path in DASHBOARDS}


def targets(dashboard: dict[str, Any], datasource: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == datasource:
                yield panel, target


def built(c: Conventions) -> dict[str, dict[str, Any]]:
    return {path: build(c) for path, build in DASHBOARDS.items()}


def panel_named(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in dashboard["panels"] if p["title"] == title)


def test_five_dashboards_with_fixed_uids_in_their_files() -> None:
    assert {path: d["uid"] for path, d in committed().items()} == UIDS
    assert set(BOARDS) == set(UIDS.values())
    titles = [d["title"] for d in committed().values()]
    assert len(set(titles)) == 5


@pytest.mark.parametrize("path", sorted(UIDS))
def test_each_has_the_service_variable_from_service_name(path: str) -> None:
    variables = {v["name"]: v for v in committed()[path]["templating"]["list"]}
    service = variables["service"]
    assert service["type"] == "query"
    assert service["datasource"]["uid"] == "prometheus"
    assert re.fullmatch(r"label_values\(\w+, service_name\)", service["query"]["query"])
    assert "job" not in service["query"]["query"]


@pytest.mark.parametrize("path", sorted(UIDS))
def test_each_links_to_the_other_four_keeping_time_and_service(path: str) -> None:
    dashboard = committed()[path]
    others = set(UIDS.values()) - {dashboard["uid"]}
    assert {link["url"] for link in dashboard["links"]} == {f"/d/{uid}" for uid in others}
    assert all(link["includeVars"] and link["keepTime"] for link in dashboard["links"])


@pytest.mark.parametrize("path", sorted(UIDS))
def test_every_prometheus_selector_filters_on_the_service_or_the_collector(path: str) -> None:
    checked = 0
    for panel, target in targets(committed()[path], "prometheus"):
        expr = target["expr"]
        selectors = SELECTOR.findall(expr)
        assert selectors, f"{panel['title']}: no selector in {expr}"
        for metric, matchers in selectors:
            scope = 'job=~"$collector"' if metric.startswith("otelcol_") else 'service_name=~"$service"'
            assert scope in matchers.split(","), f"{panel['title']}: {metric}{{{matchers}}} lacks {scope}"
            checked += 1
        # no bare metric name (a selector without braces would see every service)
        bare = [name for name in re.findall(r"\b(\w+)\b(?!\{)", expr) if name in METRICS]
        assert bare == [], f"{panel['title']}: unfiltered {bare}"
    assert checked


def test_only_metric_names_that_the_runtime_or_the_pinned_collector_emit() -> None:
    runtime = runtime_metric_names()
    assert "qm_otel_breaker_state" in runtime
    used = {metric for d in committed().values() for _, t in targets(d, "prometheus")
            for metric, _ in SELECTOR.findall(t["expr"])}
    assert used - runtime - COLLECTOR_METRICS - EVENT_LOOP_METRICS - SYSTEM_METRICS == set()
    assert used >= {f"{LAG}_bucket", STALLS} | SYSTEM_METRICS
    variables = [v["query"]["query"] for d in committed().values() for v in d["templating"]["list"]
                 if v["type"] == "query"]
    assert {re.search(r"label_values\((\w+),", q).group(1) for q in variables} <= runtime | COLLECTOR_METRICS  # type: ignore[union-attr]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["otel-collector"]["image"] == COLLECTOR_IMAGE, (
        "the collector changed: check the otelcol_* names against its metadata.yaml files, then update the test")


_REPORTED = """
import json
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
SystemMetricsInstrumentor(config=json.loads(input())).instrument(meter_provider=MeterProvider(metric_readers=[reader]))
found = []
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            kind = type(m.data).__name__.lower()
            found.append([m.name, m.unit or "", kind, getattr(m.data, "is_monotonic", None),
                          sorted({key for point in m.data.data_points for key in point.attributes})])
print(json.dumps(found))
"""


@pytest.mark.integration
def test_the_runtime_panels_chart_what_the_instrumentation_reports() -> None:
    """The overview's runtime series are the contrib instrumentation's metrics under Prometheus's OTLP names.

    The instrumentation runs in a child process (it is a process-wide singleton) on an in-memory
    reader; each metric's name, unit and kind go through Prometheus's translation
    (``UnderscoreEscapingWithSuffixes``, test_prometheus_workers.otlp_to_prometheus), and the labels the
    panels group by are attributes it writes.
    """
    run = subprocess.run([sys.executable, "-c", _REPORTED], input=json.dumps(SYSTEM_CONFIG), capture_output=True,
                         text=True, check=True, timeout=60)
    reported = {otlp_to_prometheus(name, unit, kind, monotonic): {key.replace(".", "_") for key in keys}
                for name, unit, kind, monotonic, keys in json.loads(run.stdout)}
    assert set(reported) >= SYSTEM_METRICS, SYSTEM_METRICS - set(reported)
    overview = committed()["dashboards/qm-otel-service.json"]
    for panel, target in targets(overview, "prometheus"):
        for metric, _ in SELECTOR.findall(target["expr"]):
            if metric in SYSTEM_METRICS:
                grouped = {label.strip() for by in re.findall(r"by \(([^)]*)\)", target["expr"])
                           for label in by.split(",")}
                assert grouped - {"instance"} <= reported[metric], (panel["title"], grouped)
    # the CPU panel: the rate of the time, the same name on both paths (qm-otel does not report the
    # utilisation gauge, whose unit "1" is "_ratio" over OTLP only)
    assert not any("utilization" in name for name in reported)
    assert not any("utilization" in t["expr"] for _, t in targets(overview, "prometheus"))


def test_the_event_loop_panels_chart_the_watchdogs_instruments_by_their_prometheus_names() -> None:
    names = {otlp_to_prometheus(*instrument) for instrument in EVENT_LOOP_INSTRUMENTS}
    assert names == {LAG, STALLS}
    board = committed()["dashboards/qm-otel-conventions.json"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"] if "Event-loop" in p["title"]}
    assert len(exprs) == 4
    lag = exprs["Event-loop lag p50 / p99 by instance"]
    assert [e.split("(")[1].split(",")[0] for e in lag] == ["0.5", "0.99"]
    assert all(f"sum by (instance, le) (rate({LAG}_bucket{{" in e for e in lag)
    by_route = exprs["Event-loop stalls per minute by route"][0]
    assert by_route.startswith("label_replace(60 * sum by (http_route) (rate(qm_otel_event_loop_blocked_total{")
    assert '"http_route", "")' in by_route  # a stall outside any request gets a name instead of no legend


def test_units_are_grafana_units_and_memory_is_mebibytes() -> None:
    units = {p["fieldConfig"]["defaults"]["unit"] for d in committed().values() for p in d["panels"]
             if "fieldConfig" in p}
    assert units <= UNITS
    text = "".join((ROOT / path).read_text() for path in UIDS)
    assert "decmbytes" not in text
    memory = panel_named(committed()["dashboards/qm-otel-conventions.json"], "Resident memory")
    assert memory["fieldConfig"]["defaults"]["unit"] == "mbytes"
    assert memory["targets"][0]["expr"].endswith(f"/ {1024 * 1024}")
    # the overview's per-process RSS stays in bytes, its memory-band colours scaled to bytes (MB = 2^20)
    per_process = panel_named(committed()["dashboards/qm-otel-service.json"], "Resident memory per process")
    assert per_process["fieldConfig"]["defaults"]["unit"] == "bytes"


#: (file, panel title) → (band quantity, scale) or ("error_rate", alert)
BANDED = {
    ("dashboards/qm-otel-service.json", "Response time p95"): ("response_time", 0.001),
    ("dashboards/qm-otel-service.json", "Response time p50 by route (exemplars open traces)"): ("response_time", 0.001),
    ("dashboards/qm-otel-service.json", "Response time p95 by route (exemplars open traces)"): ("response_time", 0.001),
    ("dashboards/qm-otel-service.json", "Response time p99 by route (exemplars open traces)"): ("response_time", 0.001),
    ("dashboards/qm-otel-service.json", "Error rate (5xx)"): ("error_rate", None),
    ("dashboards/qm-otel-service.json", "Error rate by route (5xx share)"): ("error_rate", None),
    ("dashboards/qm-otel-conventions.json", "Start-up duration"): ("bootstrap", 1.0),
    ("dashboards/qm-otel-conventions.json", "Start-up duration over time"): ("bootstrap", 1.0),
    ("dashboards/qm-otel-conventions.json", "Resident memory"): ("memory", 1.0),
    ("dashboards/qm-otel-conventions.json", "Resident memory over time"): ("memory", 1.0),
    ("dashboards/qm-otel-conventions.json", "Cache hit rate"): ("cache_hit_rate", 1.0),
    ("dashboards/qm-otel-conventions.json", "Cache hit rate over time"): ("cache_hit_rate", 1.0),
    ("dashboards/qm-otel-conventions.json", "Cache hit ratio over the last lookups (degradation window)"): (
        "cache_hit_rate", 0.01),
    ("dashboards/qm-otel-conventions.json", "Response time p95"): ("response_time", 1.0),
    ("dashboards/qm-otel-conventions.json", "Response time p95 over time"): ("response_time", 1.0),
    ("dashboards/qm-otel-conventions.json", "Error rate"): ("error_rate", None),
    ("dashboards/qm-otel-conventions.json", "Error rate over time"): ("error_rate", None),
    ("dashboards/qm-otel-service.json", "Resident memory per process"): ("memory", 1024 * 1024),
    # the watchdog's default threshold, the response-time band's error edge (ms)
    ("dashboards/qm-otel-conventions.json", "Event-loop lag p99"): ("response_time_error_edge", None),
    ("dashboards/qm-otel-conventions.json", "Event-loop lag p50 / p99 by instance"): (
        "response_time_error_edge", None),
    # QmOtelEventLoopBlocked's stall rate ([alert_policy])
    ("dashboards/qm-otel-conventions.json", "Event-loop stalls per minute"): ("event_loop_stalls", None),
    ("dashboards/qm-otel-conventions.json", "Event-loop stalls per minute by route"): ("event_loop_stalls", None),
}


def expected_thresholds(c: Conventions, quantity: str, scale: float | None) -> dict[str, Any]:
    if quantity == "response_time_error_edge":
        return alert_thresholds(c.bands["response_time"].warning)
    if quantity == "event_loop_stalls":
        return alert_thresholds(c.alert_policy.event_loop_stalls_per_minute_above)
    if scale is None:
        return alert_thresholds(c.alerts["error_rate_percent_above"])
    return band_thresholds(c.bands[quantity], scale)


def shifted(c: Conventions) -> Conventions:
    """A copy with every band edge, the error-rate alert and the event-loop stall rate moved (order kept)."""
    def move(band: Band) -> Band:
        return dataclasses.replace(band, optimal=band.optimal + 3, acceptable=band.acceptable + 2,
                                   warning=band.warning + 1)
    alerts = {**c.alerts, "error_rate_percent_above": c.alerts["error_rate_percent_above"] + 1}
    policy = dataclasses.replace(c.alert_policy, event_loop_stalls_per_minute_above=(
        c.alert_policy.event_loop_stalls_per_minute_above + 1))
    return dataclasses.replace(c, bands={name: move(b) for name, b in c.bands.items()}, alerts=alerts,
                               alert_policy=policy)


def test_thresholds_are_the_conventions_bands_and_follow_a_change() -> None:
    original, changed = conventions(), shifted(conventions())
    before, after = built(original), built(changed)
    assert before == committed()
    for (path, title), (quantity, scale) in BANDED.items():
        old = panel_named(before[path], title)["fieldConfig"]["defaults"]["thresholds"]
        new = panel_named(after[path], title)["fieldConfig"]["defaults"]["thresholds"]
        assert old == expected_thresholds(original, quantity, scale), title
        assert new == expected_thresholds(changed, quantity, scale), title
        assert new != old, title


def test_every_band_coloured_panel_is_listed() -> None:
    """A new panel with band colours must join BANDED (so the test above covers it)."""
    colours = set(COLOURS.values())
    for path, dashboard in committed().items():
        for panel in dashboard["panels"]:
            steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
            if {step["color"] for step in steps} >= {COLOURS["optimal"], COLOURS["error"]} and (
                    len(steps) in (2, 4) and {s["color"] for s in steps} <= colours
                    and "breaker" not in panel["title"].lower() and "Openings" not in panel["title"]):
                assert (path, panel["title"]) in BANDED


@pytest.mark.parametrize(("quantity", "value", "band"), EDGES)
@pytest.mark.parametrize("scale", [1.0, 0.001, 0.01])
def test_scaled_band_colours_reproduce_every_band_edge(quantity: str, value: float, band: str, scale: float) -> None:
    steps = band_thresholds(conventions().bands[quantity], scale)["steps"]
    assert colour_of(steps, value * scale) == COLOURS[band]


def test_latency_panels_carry_exemplars_in_the_unit_of_the_histogram() -> None:
    overview = committed()["dashboards/qm-otel-service.json"]
    latency = [p for p in overview["panels"] if "exemplars" in p["title"]]
    assert len(latency) == 3
    for panel in latency:
        assert panel["fieldConfig"]["defaults"]["unit"] == "s"  # exemplar values are seconds too
        assert all(t["exemplar"] is True for t in panel["targets"])
        assert "http_route, le" in panel["targets"][0]["expr"]
    datasources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/datasources.yaml").read_text())
    prometheus = next(d for d in datasources["datasources"] if d["uid"] == "prometheus")
    destinations = {d["name"]: d["datasourceUid"] for d in prometheus["jsonData"]["exemplarTraceIdDestinations"]}
    assert destinations["trace_id"] == "tempo"  # the exemplar label of OTLP metrics in Prometheus


def test_logs_and_traces_look_one_request_up_by_correlation_or_trace_id() -> None:
    board = committed()["dashboards/qm-otel-logs-traces.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["request"]["type"] == "textbox"
    lines = panel_named(board, "Log lines of this request (every service)")["targets"][0]["expr"]
    assert 'correlation_id="$request" or trace_id="$request"' in lines
    trace = panel_named(board, "Trace of this request")
    assert (trace["type"], trace["targets"][0]["query"]) == ("traces", "$request")
    slow_ms = f"{conventions().slow_request_ms:g}"
    assert panel_named(board, "Slow requests (> 2 s)")["targets"][0]["expr"].endswith(f"duration_ms > {slow_ms}")
    for _, target in targets(board, "loki"):
        assert re.search(r"\{service_name=~\"(\$service|\.\+)\"\} [|]", target["expr"]), target["expr"]
        assert target["expr"].count("(") == target["expr"].count(")")


@pytest.mark.parametrize("path", sorted(UIDS))
def test_panels_fit_the_grid_with_unique_ids_and_known_datasources(path: str) -> None:
    panels = committed()[path]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "text":
            assert panel["datasource"]["uid"] in {"prometheus", "loki", "tempo"}
            assert {t["datasource"]["uid"] for t in panel["targets"]} == {panel["datasource"]["uid"]}
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    cells = {(x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])}
    assert len(cells) == sum(p["gridPos"]["w"] * p["gridPos"]["h"] for p in panels)  # no overlap


def substituted(expr: str) -> str:
    for variable, value in sorted(SUBSTITUTIONS.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the integration test does not substitute: {expr}"
    return expr


def promtool_check(expressions: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expression_{n}", "expr": expr} for n, expr in enumerate(expressions)]}]}
    path = tmp_path / "expressions.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run([PROMTOOL or "promtool", "check", "rules", str(path)], capture_output=True, text=True,
                          check=False)


@needs_promtool
@pytest.mark.integration
def test_every_promql_expression_parses_in_promtool(tmp_path: Path) -> None:
    expressions = [substituted(t["expr"]) for d in committed().values() for _, t in targets(d, "prometheus")]
    expressions += [substituted(v["query"]["query"].replace("label_values(", "group by (").replace(", ", ") (", 1))
                    for d in committed().values() for v in d["templating"]["list"] if v["type"] == "query"]
    check = promtool_check(expressions, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in check.stdout


@needs_promtool
@pytest.mark.integration
def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    """The harness above can fail: one unbalanced parenthesis is enough."""
    check = promtool_check(['sum(rate(qm_otel_breaker_calls_total{service_name=~".*"}[1m])'], tmp_path)
    assert check.returncode != 0
