"""Service overview (RED): request rate, errors, and latency by route with the response-time bands; the runtime.

Latency stays in seconds, the unit of ``http.server.request.duration``, so the exemplars (trace IDs
attached to the histogram, in seconds) sit on the curves they belong to; the band edges are scaled
to seconds instead.

The runtime (issue 25): the process and CPython metrics of the contrib system-metrics
instrumentation, one series per worker process (``instance``: ``service.instance.id``, a UUID per
process, in the stack; the scrape target with the Prometheus exporter). Names as Prometheus 3's OTLP
receiver writes them (``process.cpu.time``, s → ``process_cpu_time_seconds_total``; units in braces
are dropped). The CPU panel charts the rate of ``process.cpu.time``, not ``process.cpu.utilization``:
a gauge of unit ``1`` is ``process_cpu_utilization_ratio`` over OTLP but ``process_cpu_utilization``
from the Prometheus exporter, and the time's rate is the same series on both paths.
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.dashboards.board import dashboard, service_variable
from qm_otel.cli.render.dashboards.panels import (
    Layout,
    Panel,
    alert_thresholds,
    band_thresholds,
    describe,
    panel,
    prom,
    rate,
    selector,
)
from qm_otel.core.conventions import Conventions

__all__ = ["RUNTIME", "UID", "error_share", "overview", "quantile"]

UID = "qm-otel-service"
_REQUESTS = "http_server_request_duration_seconds_count"
_BUCKETS = "http_server_request_duration_seconds_bucket"
_SERVER_ERRORS = 'http_response_status_code=~"5.."'
_MS = 0.001
_MIB = 1024 * 1024
#: the runtime panels' series (contrib system-metrics instrumentation 0.66b1, Prometheus names)
RUNTIME = {
    "cpu": "process_cpu_time_seconds_total",  # attribute type: user, system
    "rss": "process_memory_usage_bytes",  # the memory band's metric (no attribute)
    "virtual": "process_memory_virtual_bytes",
    "threads": "process_thread_count",
    "fds": "process_open_file_descriptor_count",
    "switches": "process_context_switches_total",  # attribute type: voluntary, involuntary
    "gc": "cpython_gc_collections_total",  # attribute cpython.gc.generation: 0, 1, 2
    "collected": "cpython_gc_collected_objects_total",
    "uncollectable": "cpython_gc_uncollectable_objects_total",
}
_GENERATION = "cpython_gc_generation"


def quantile(q: float, by: str = "") -> str:
    """The ``q`` quantile of the request duration (seconds), per ``by`` (e.g. ``http_route``) or overall."""
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q:g}, sum by ({labels}) ({rate(_BUCKETS)}))"


def error_share(by: str = "") -> str:
    """Percentage of responses with a 5xx status; 0 (not absent) while there is none."""
    group = f" by ({by})" if by else ""
    errors, requests = rate(_REQUESTS, _SERVER_ERRORS), rate(_REQUESTS)
    return f"100 * (sum{group} ({errors}) or sum{group} ({requests}) * 0) / sum{group} ({requests})"


def _headline(layout: Layout, c: Conventions) -> list[Panel]:
    band = c.bands["response_time"]
    error_limit = c.alerts["error_rate_percent_above"]
    return [
        panel(layout, "stat", "Requests per second", [prom(f"sum({rate(_REQUESTS)})", "req/s")], unit="reqps",
              width=6, height=4),
        panel(layout, "stat", "Error rate (5xx)", [prom(error_share(), "5xx %")], unit="percent",
              thresholds=alert_thresholds(error_limit), width=6, height=4,
              description=f"Share of 5xx responses. Alert above {error_limit:g} %."),
        panel(layout, "stat", "Response time p95", [prom(quantile(0.95), "p95")], unit="s",
              thresholds=band_thresholds(band, _MS), width=6, height=4, description=describe(band)),
        panel(layout, "stat", "Requests in flight", [prom(f"sum({selector('http_server_active_requests')})")],
              width=6, height=4),
    ]


def _traffic(layout: Layout, c: Conventions) -> list[Panel]:
    error_limit = c.alerts["error_rate_percent_above"]
    return [
        panel(layout, "timeseries", "Requests per second by route",
              [prom(f"sum by (http_route) ({rate(_REQUESTS)})", "{{http_route}}")], unit="reqps", width=8),
        panel(layout, "timeseries", "Error rate by route (5xx share)",
              [prom(error_share("http_route"), "{{http_route}}")], unit="percent",
              thresholds=alert_thresholds(error_limit), width=8,
              description=f"Alert (QmOtelHighErrorRate) above {error_limit:g} % for the whole service."),
        panel(layout, "timeseries", "Responses by status code",
              [prom(f"sum by (http_response_status_code) ({rate(_REQUESTS)})", "{{http_response_status_code}}")],
              unit="reqps", width=8),
    ]


def _latency(layout: Layout, c: Conventions) -> list[Panel]:
    band = c.bands["response_time"]
    return [
        panel(layout, "timeseries", f"Response time p{round(q * 100)} by route (exemplars open traces)",
              [prom(quantile(q, "http_route"), "{{http_route}}", exemplar=True)], unit="s",
              thresholds=band_thresholds(band, _MS), width=8, height=9,
              description=(f"{describe(band)} The dots are exemplars: requests with their trace ID; "
                           "click one to open the trace in Tempo."))
        for q in (0.5, 0.95, 0.99)
    ]


def _per_instance(metric: str) -> str:
    """A gauge per worker process (``max``: one series per process and name, whichever path wrote it)."""
    return f"max by (instance) ({selector(metric)})"


def _runtime(layout: Layout, c: Conventions) -> list[Panel]:
    memory = c.bands["memory"]
    r = RUNTIME
    return [
        panel(layout, "timeseries", "CPU per process (user + system)",
              [prom(f"sum by (instance) ({rate(r['cpu'])})", "{{instance}}")], unit="percentunit", width=8,
              description=("CPU seconds per second of each worker process (rate of process.cpu.time, user and "
                           "system): 100 % is one core busy. A process near 100 % is CPU-bound: its event loop "
                           "cannot serve other requests meanwhile.")),
        panel(layout, "timeseries", "Resident memory per process", [prom(_per_instance(r["rss"]), "{{instance}}")],
              unit="bytes", thresholds=band_thresholds(memory, _MIB), width=8,
              description=f"process.memory.usage (RSS) of each worker process, MB = 2^20 bytes. {describe(memory)}"),
        panel(layout, "timeseries", "Virtual memory per process", [prom(_per_instance(r["virtual"]), "{{instance}}")],
              unit="bytes", width=8,
              description="process.memory.virtual: address space reserved, mostly not in RAM; a steady climb "
                          "with flat RSS is usually thread stacks or mapped files."),
        panel(layout, "timeseries", "Garbage collections per second by generation",
              [prom(f"sum by (instance, {_GENERATION}) ({rate(r['gc'])})",
                    f"{{{{instance}}}} gen {{{{{_GENERATION}}}}}")], unit="cps", width=8,
              description=("cpython.gc.collections per second and generation (0 young … 2 oldest). Generation 2 "
                           "collections pause the whole process; many of them mean many long-lived objects.")),
        panel(layout, "timeseries", "Objects collected per second (uncollectable: a leak)",
              [prom(f"sum by (instance) ({rate(r['collected'])})", "{{instance}} collected"),
               prom(f"sum by (instance) ({rate(r['uncollectable'])})", "{{instance}} uncollectable")],
              unit="cps", width=8,
              description=("cpython.gc.collected_objects and cpython.gc.uncollectable_objects per second: "
                           "objects in reference cycles freed by the collector; uncollectable ones stay in "
                           "gc.garbage for good.")),
        panel(layout, "timeseries", "Context switches per second",
              [prom(f"sum by (instance, type) ({rate(r['switches'])})", "{{instance}} {{type}}")], unit="cps",
              width=8,
              description=("process.context_switches per second. Involuntary: the OS took the CPU away (CPU "
                           "contention, a CPU limit); voluntary: the process waited (I/O, locks).")),
        panel(layout, "timeseries", "Threads per process", [prom(_per_instance(r["threads"]), "{{instance}}")],
              width=12,
              description=("process.thread.count. The event loop is one; the others are the SDK's exporters, "
                           "the watchdog, and run_in_executor's pool. A climb without end is a thread leak.")),
        panel(layout, "timeseries", "Open file descriptors per process",
              [prom(_per_instance(r["fds"]), "{{instance}}")], width=12,
              description=("process.open_file_descriptor.count: sockets, files and pipes. Growth without end "
                           "is a leak of connections or files; at the process's limit (ulimit -n) accept() "
                           "and open() fail.")),
    ]


def overview(c: Conventions) -> dict[str, Any]:
    """Rate, errors and duration (RED) of one service, by route, coloured by the conventions; its runtime."""
    layout = Layout()
    panels = [*_headline(layout, c), *_traffic(layout, c), *_latency(layout, c), *_runtime(layout, c)]
    return dashboard(UID, "Rate, errors and duration of one service, by route; the runtime of each worker process.",
                     panels, [service_variable()])
