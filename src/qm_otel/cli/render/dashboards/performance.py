"""Performance conventions: start-up, memory, cache hit rate, response time and error rate, each in its bands.

One row per quantity of the conventions' threshold table: the current value (stat) and its history
(time series), both coloured by the four bands of ``conventions.toml``. The error rate has only an
alert line (above it: error), so it has two colours.

Then the event loop (issue 25): the watchdog's heartbeat lag (``qm_otel.event_loop.lag``, a histogram
in seconds) and its stalls (``qm_otel.event_loop.blocked``, by ``http.route``), with one line: the
watchdog's default threshold, the response-time band's error edge (``[bands.response_time].warning_max``),
and the stall rate of QmOtelEventLoopBlocked (``[alert_policy].event_loop_stalls_per_minute_above``).
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.dashboards.board import dashboard, service_variable
from qm_otel.cli.render.dashboards.overview import error_share, quantile
from qm_otel.cli.render.dashboards.panels import (
    COLOURS,
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

__all__ = ["LAG", "MIB", "STALLS", "UID", "lag_quantile", "performance", "stalls_per_minute"]

UID = "qm-otel-conventions"
MIB = 1024 * 1024
_CACHE = "qm_otel_cache_requests_total"
#: the watchdog's metrics as Prometheus names them (histogram in seconds; counter, unit {stall})
LAG = "qm_otel_event_loop_lag_seconds"
STALLS = "qm_otel_event_loop_blocked_total"
#: a stall outside any request has no http_route: shown under this name instead of an empty legend
_NO_ROUTE = "(outside any request)"


def _row(layout: Layout, title: str, current: str, history: str, legend: str, *, unit: str,
         thresholds: dict[str, Any], description: str) -> list[Panel]:
    """A stat with the current value and a time series with its history, in the same colours."""
    return [
        panel(layout, "stat", title, [prom(current, title)], unit=unit, thresholds=thresholds, width=6, height=6,
              description=description),
        panel(layout, "timeseries", f"{title} over time", [prom(history, legend)], unit=unit, thresholds=thresholds,
              width=18, height=6, description=description),
    ]


def _hit_rate(by: str = "") -> str:
    group = f" by ({by})" if by else ""
    hits, lookups = rate(_CACHE, 'result="hit"'), rate(_CACHE)
    return f"100 * (sum{group} ({hits}) or sum{group} ({lookups}) * 0) / sum{group} ({lookups})"


def _startup_and_memory(layout: Layout, c: Conventions) -> list[Panel]:
    startup, memory = c.bands["bootstrap"], c.bands["memory"]
    started = selector("qm_otel_startup_duration_seconds")
    rss = selector("process_memory_usage_bytes")
    return [
        *_row(layout, "Start-up duration", f"max({started}) * 1000", f"max by (instance) ({started}) * 1000",
              "{{instance}}", unit="ms", thresholds=band_thresholds(startup),
              description=f"Duration of qm_otel.setup() per process. {describe(startup)}"),
        *_row(layout, "Resident memory", f"max({rss}) / {MIB}", f"max by (instance) ({rss}) / {MIB}",
              "{{instance}}", unit="mbytes", thresholds=band_thresholds(memory),
              description=f"RSS per process, MB = 2^20 bytes. {describe(memory)}"),
    ]


def _cache(layout: Layout, c: Conventions) -> list[Panel]:
    band, degraded_below = c.bands["cache_hit_rate"], c.degradation
    window = (f"Hit ratio over each cache's last {degraded_below.window} lookups; below "
              f"{degraded_below.cache_hit_rate_below:g} % (after {degraded_below.min_lookups} lookups) the service "
              "enters degraded mode.")
    degraded_colour = COLOURS[next(b for b, (_, status) in c.band_outcomes.items() if status == "DEGRADED")]
    mapping = [{"type": "value", "options": {"0": {"text": "normal", "color": COLOURS["optimal"], "index": 0},
                                             "1": {"text": "DEGRADED", "color": degraded_colour, "index": 1}}}]
    return [
        *_row(layout, "Cache hit rate", _hit_rate(), _hit_rate("cache"), "{{cache}}", unit="percent",
              thresholds=band_thresholds(band), description=f"Hits over all lookups. {describe(band)}"),
        panel(layout, "stat", "Degraded mode", [prom(f"max({selector('qm_otel_degraded')})", "degraded")],
              width=6, height=6, mappings=mapping, description=window),
        panel(layout, "timeseries", "Cache hit ratio over the last lookups (degradation window)",
              [prom(f"min by (cache) ({selector('qm_otel_cache_hit_ratio')})", "{{cache}}")], unit="percentunit",
              thresholds=band_thresholds(band, 0.01), width=18, height=6, description=window),
    ]


def _requests(layout: Layout, c: Conventions) -> list[Panel]:
    band, error_limit = c.bands["response_time"], c.alerts["error_rate_percent_above"]
    return [
        *_row(layout, "Response time p95", f"1000 * {quantile(0.95)}", f"1000 * {quantile(0.95, 'http_route')}",
              "{{http_route}}", unit="ms", thresholds=band_thresholds(band),
              description=f"95th percentile of http.server.request.duration. {describe(band)}"),
        *_row(layout, "Error rate", error_share(), error_share("http_route"), "{{http_route}}", unit="percent",
              thresholds=alert_thresholds(error_limit),
              description=f"Share of 5xx responses; error above {error_limit:g} % (no other bands)."),
    ]


def lag_quantile(q: float, by: str = "") -> str:
    """The ``q`` quantile of the event loop's heartbeat lag in milliseconds, per ``by`` (``instance``) or overall."""
    labels = f"{by}, le" if by else "le"
    return f"1000 * histogram_quantile({q:g}, sum by ({labels}) ({rate(f'{LAG}_bucket')}))"


def stalls_per_minute(by: str = "") -> str:
    """Event-loop stalls per minute; by route, a stall outside a request named :data:`_NO_ROUTE`."""
    if not by:
        return f"60 * sum ({rate(STALLS)})"
    grouped = f"60 * sum by ({by}) ({rate(STALLS)})"
    return f'label_replace({grouped}, "{by}", "{_NO_ROUTE}", "{by}", "")' if by == "http_route" else grouped


def _event_loop(layout: Layout, c: Conventions) -> list[Panel]:
    block_ms = c.bands["response_time"].warning  # the watchdog's default threshold: the error band's edge
    stalls = c.alert_policy.event_loop_stalls_per_minute_above
    lag_line, stall_line = alert_thresholds(block_ms), alert_thresholds(stalls)
    lag = (f"How late the event loop ran the watchdog's heartbeat (qm_otel.event_loop.lag), per worker process: "
           f"the time every request on that loop waited for it. Red above {block_ms:g} ms, the watchdog's default "
           "threshold (the response-time band's error edge): above it the loop counts as blocked, and the "
           "watchdog logs the blocking line (logger qm_otel.event_loop, WARNING).")
    per_minute = (f"Stalls of the event loop over the watchdog's threshold (default {block_ms:g} ms) per minute, "
                  f"by the route of the request that was running. Red above {stalls:g} a minute: "
                  "QmOtelEventLoopBlocked fires when the service stays there. Each stall is one WARNING record "
                  "naming the blocking line.")
    return [
        panel(layout, "stat", "Event-loop lag p99", [prom(f"max({lag_quantile(0.99, 'instance')})", "p99")],
              unit="ms", thresholds=lag_line, width=6, height=6,
              description=f"The worst worker process's p99. {lag}"),
        panel(layout, "timeseries", "Event-loop lag p50 / p99 by instance",
              [prom(lag_quantile(0.5, "instance"), "{{instance}} p50"),
               prom(lag_quantile(0.99, "instance"), "{{instance}} p99")],
              unit="ms", thresholds=lag_line, width=18, height=6, description=lag),
        panel(layout, "stat", "Event-loop stalls per minute", [prom(f"{stalls_per_minute()} or vector(0)", "stalls")],
              unit="short", thresholds=stall_line, width=6, height=6, description=per_minute),
        panel(layout, "timeseries", "Event-loop stalls per minute by route",
              [prom(stalls_per_minute("http_route"), "{{http_route}}")], unit="short", thresholds=stall_line,
              width=18, height=6, custom={"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}},
              description=per_minute),
    ]


def performance(c: Conventions) -> dict[str, Any]:
    """Each quantity of the conventions' threshold table, coloured by its bands; then the event loop."""
    layout = Layout()
    panels = [*_startup_and_memory(layout, c), *_cache(layout, c), *_requests(layout, c), *_event_loop(layout, c)]
    return dashboard(UID, "The conventions' threshold bands: start-up, memory, cache, response time, errors; "
                     "the event loop's lag and stalls.", panels, [service_variable()])
