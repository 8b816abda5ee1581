"""Telemetry pipeline: what the collector accepted, refused, failed and queued, and what the service dropped.

The collector's own metrics (``service.telemetry.metrics``, scraped at :8888) are named as the
pinned collector (v0.159) writes them with its default Prometheus reader settings (no unit or
``_total`` suffix): ``otelcol_receiver_accepted_spans``, ``otelcol_exporter_queue_size``, ... The
memory limiter reports its refusals as ``otelcol_processor_memory_limiter_refused_*`` (renamed from
``otelcol_processor_refused_*`` in collector v0.155.0, #15167; the ``processor`` attribute is kept).
These series carry no ``service_name``: one collector serves every service, so they are filtered on
``$collector`` (the scrape job) instead.
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.dashboards.board import collector_variable, dashboard, service_variable
from qm_otel.cli.render.dashboards.panels import Layout, Panel, panel, prom, rate, selector
from qm_otel.core.conventions import Conventions

__all__ = ["COLLECTOR", "SIGNALS", "UID", "pipeline"]

UID = "qm-otel-pipeline"
COLLECTOR = 'job=~"$collector"'
#: the collector's item name per signal → the panel title
SIGNALS = {"spans": "Spans", "metric_points": "Metric points", "log_records": "Log records"}


def _collector_rate(metric: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} ({rate(metric, scope=COLLECTOR)})"


def _receivers(layout: Layout) -> list[Panel]:
    return [
        panel(layout, "timeseries", f"{title} received: accepted / refused / failed",
              [prom(_collector_rate(f"otelcol_receiver_{outcome}_{signal}"), outcome)
               for outcome in ("accepted", "refused", "failed")],
              unit="short", width=8,
              description=(f"{title} per second at the collector's receivers. Refused: the pipeline said no "
                           "(memory limiter), the sender is told to retry. Failed: an internal error."))
        for signal, title in SIGNALS.items()
    ]


def _exporters(layout: Layout) -> list[Panel]:
    return [
        panel(layout, "timeseries", f"{title} exported: sent / send failed / enqueue failed",
              [prom(_collector_rate(f"otelcol_exporter_{outcome}_{signal}", "exporter"), f"{{{{exporter}}}} {outcome}")
               for outcome in ("sent", "send_failed", "enqueue_failed")],
              unit="short", width=8,
              description="Per exporter. Enqueue failed: the sending queue was full and the items were dropped.")
        for signal, title in SIGNALS.items()
    ]


def _queues(layout: Layout) -> list[Panel]:
    size = f"max by (exporter) ({selector('otelcol_exporter_queue_size', scope=COLLECTOR)})"
    capacity = f"max by (exporter) ({selector('otelcol_exporter_queue_capacity', scope=COLLECTOR)})"
    refused = [prom(_collector_rate(f"otelcol_processor_memory_limiter_refused_{signal}", "processor"),
                    f"{{{{processor}}}} {title}")
               for signal, title in SIGNALS.items()]
    return [
        panel(layout, "timeseries", "Exporter queue size and capacity",
              [prom(size, "{{exporter}} size"), prom(capacity, "{{exporter}} capacity")], width=8,
              description="Batches waiting in each exporter's persistent sending queue, against its capacity."),
        panel(layout, "timeseries", "Exporter queue fill", [prom(f"100 * {size} / {capacity}", "{{exporter}}")],
              unit="percent", width=8, description="At 100 % new items are dropped (enqueue failed)."),
        panel(layout, "timeseries", "Memory limiter refusals", refused, width=8,
              description="Items refused by the memory_limiter processor (the collector is near its memory limit)."),
        panel(layout, "timeseries", "Collector memory (RSS)",
              [prom(f"max by (instance) ({selector('otelcol_process_memory_rss', scope=COLLECTOR)})",
                    "{{instance}}")], unit="bytes", width=24, height=6),
    ]


def _service_side(layout: Layout) -> list[Panel]:
    return [
        panel(layout, "timeseries", "Items the service dropped",
              [prom(f"sum by (signal, reason) ({rate('qm_otel_telemetry_dropped_total')})",
                    "{{signal}}: {{reason}}")], width=8,
              description="Dropped before export: buffer or queue full, rejected by the receiver, lost at shutdown."),
        panel(layout, "timeseries", "Items delivered after a retry",
              [prom(f"sum by (signal) ({rate('qm_otel_telemetry_retried_total')})", "{{signal}}")], width=8,
              description="Delivered after at least one failed attempt (the collector was away or refused)."),
        panel(layout, "timeseries", "Invalid events",
              [prom(f"sum by (kind) ({rate('qm_otel_events_invalid_total')})", "{{kind}}")], width=8,
              description="qm_otel.event() calls naming an unknown component or status."),
    ]


def pipeline(c: Conventions) -> dict[str, Any]:
    """The path from the service through the collector to the backends, and where items get lost."""
    del c  # no thresholds here: the conventions hold none for the pipeline
    layout = Layout()
    panels = [*_receivers(layout), *_exporters(layout), *_queues(layout), *_service_side(layout)]
    return dashboard(UID, "The collector's accepted, refused, failed and queued items; what the service dropped.",
                     panels, [service_variable(), collector_variable()])
