"""Service overview (RED): request rate, errors, and latency by route with the response-time bands.

Latency stays in seconds, the unit of ``http.server.request.duration``, so the exemplars (trace IDs
attached to the histogram, in seconds) sit on the curves they belong to; the band edges are scaled
to seconds instead.
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
from qm_otel.conventions import Conventions

__all__ = ["UID", "error_share", "overview", "quantile"]

UID = "qm-otel-service"
_REQUESTS = "http_server_request_duration_seconds_count"
_BUCKETS = "http_server_request_duration_seconds_bucket"
_SERVER_ERRORS = 'http_response_status_code=~"5.."'
_MS = 0.001


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


def overview(c: Conventions) -> dict[str, Any]:
    """Rate, errors and duration (RED) of one service, by route, coloured by the conventions."""
    layout = Layout()
    panels = [*_headline(layout, c), *_traffic(layout, c), *_latency(layout, c)]
    return dashboard(UID, "Rate, errors and duration of one service, by route.", panels, [service_variable()])
