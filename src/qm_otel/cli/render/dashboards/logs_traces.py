"""Logs & traces: one request's log lines and trace from its correlation or trace ID; warnings; slow requests.

Loki (OTLP) keeps ``service.name`` as the label ``service_name``; ``trace_id``, ``correlation_id``,
``component``, ``event``, ``duration_ms``, ``http_route`` and ``severity_text`` are structured metadata,
filtered after the stream selector.
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.dashboards.board import dashboard, service_variable, textbox_variable
from qm_otel.cli.render.dashboards.panels import (
    Layout,
    Panel,
    logs_panel,
    loki,
    panel,
    prom,
    rate,
    tempo,
    text_panel,
    traces_panel,
)
from qm_otel.core.conventions import Conventions

__all__ = ["UID", "logs_traces"]

UID = "qm-otel-logs-traces"
_STREAM = '{service_name=~"$service"}'
#: every service's lines: a request's trace crosses services
_ALL_SERVICES = '{service_name=~".+"}'
_PROBLEMS = 'severity_text=~"WARN|ERROR|FATAL"'
_USAGE = (
    "Paste a **correlation ID** (the `X-Correlation-ID` response header, the `correlation_id` log field) or a "
    "**trace ID** (32 hex digits) into the *request* box above. A correlation ID of 32 hex digits or a UUID *is* "
    "the trace ID; any other one is found through the `correlation.id` span attribute (table on the right)."
)


def _request(layout: Layout) -> list[Panel]:
    lines = f'{_ALL_SERVICES} | trace_id!="" | correlation_id="$request" or trace_id="$request"'
    return [
        text_panel(layout, "How to look a request up", _USAGE, width=24, height=3),
        logs_panel(layout, "Log lines of this request (every service)", lines, width=24, height=10,
                   description="The request's lines by correlation_id or trace_id; trace_id links to Tempo."),
        traces_panel(layout, "Trace of this request", "$request", width=16, height=14,
                     description="The trace whose ID is in the request box."),
        panel(layout, "table", "Traces carrying this correlation ID",
              [tempo('{ span.correlation.id = "$request" }')], width=8, height=14,
              description="For a correlation ID that is not itself a trace ID: click the trace ID to open it."),
    ]


def _problems(layout: Layout) -> list[Panel]:
    by_component = (f"sum by (component, severity_text) (count_over_time({_STREAM} | {_PROBLEMS} "
                    "[$__interval]))")
    return [
        panel(layout, "timeseries", "Warnings and errors by component", [loki(by_component,
                                                                              "{{component}} {{severity_text}}")],
              width=12, height=9, custom={"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}},
              description="Log records at WARNING or above per component (SYSTEM, CACHE, API, ...)."),
        logs_panel(layout, "Warnings and errors", f"{_STREAM} | {_PROBLEMS}", width=12, height=9),
    ]


def _slow(layout: Layout, c: Conventions) -> list[Panel]:
    slow_ms = c.slow_request_ms
    slow = f'{_STREAM} | event="http_request" | duration_ms > {slow_ms:g}'
    return [
        panel(layout, "timeseries", f"Slow requests (> {slow_ms / 1000:g} s) by route",
              [loki(f"sum by (http_route) (count_over_time({slow} [$__interval]))", "{{http_route}}")],
              width=8, height=9, custom={"drawStyle": "bars", "fillOpacity": 60},
              description=f"Request-log records over {slow_ms:g} ms (logged at WARNING)."),
        logs_panel(layout, f"Slow requests (> {slow_ms / 1000:g} s)", slow, width=8, height=9),
        panel(layout, "table", f"Slow traces (> {slow_ms / 1000:g} s)",
              [tempo(f'{{ resource.service.name = "$service" && kind = server && duration > {slow_ms:g}ms }}')],
              width=8, height=9, description="Server spans over the slow-request threshold; click to open."),
        panel(layout, "timeseries", "Incoming correlation IDs rejected",
              [prom(f"sum by (reason, source) ({rate('qm_otel_correlation_rejected_total')})",
                    "{{source}}: {{reason}}")], unit="reqps", width=24, height=7,
              description="Client-supplied IDs refused (too long, bad characters) and replaced by a new one."),
    ]


def logs_traces(c: Conventions) -> dict[str, Any]:
    """One request's lines and trace; what went wrong, by component; what was slow."""
    layout = Layout()
    panels = [*_request(layout), *_problems(layout), *_slow(layout, c)]
    variables = [service_variable(),
                 textbox_variable("request", "request (correlation or trace ID)",
                                  "A correlation ID (X-Correlation-ID) or a 32-hex-digit trace ID")]
    return dashboard(UID, "One request's log lines and trace; warnings by component; slow requests.", panels,
                     variables)
