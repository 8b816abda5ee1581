"""Draw captured telemetry in a terminal: a span waterfall per request, its log lines, key metrics."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, NumberDataPoint, Sum
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from qm_otel.runtime import process_metrics

__all__ = ["draw_stalls", "metrics_table", "render", "waterfall"]

_BAR_WIDTH = 40
_LEVEL_STYLE = {"DEBUG": "dim", "INFO": "green", "WARN": "yellow", "ERROR": "red", "FATAL": "bold red"}


def _depth_first(spans: Sequence[ReadableSpan]) -> list[tuple[int, ReadableSpan]]:
    ids = {span.context.span_id for span in spans if span.context}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children[parent].append(span)
    ordered: list[tuple[int, ReadableSpan]] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s.start_time or 0):
            ordered.append((depth, span))
            walk(span.context.span_id if span.context else None, depth + 1)

    walk(None, 0)
    return ordered


def waterfall(spans: Sequence[ReadableSpan], bar_width: int = _BAR_WIDTH) -> Table:
    """One trace as a table: indented span names, durations and bars on a shared time axis."""
    rows = _depth_first(spans)
    start = min(span.start_time or 0 for span in spans)
    end = max(span.end_time or 0 for span in spans)
    total = max(end - start, 1)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("span", overflow="fold", ratio=3)
    table.add_column("kind", style="dim", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("timeline", no_wrap=True, width=bar_width)
    for depth, span in rows:
        offset = round(((span.start_time or start) - start) / total * bar_width)
        width = max(1, round(((span.end_time or end) - (span.start_time or start)) / total * bar_width))
        failed = span.status.status_code is StatusCode.ERROR
        bar = Text(" " * offset) + Text("█" * min(width, bar_width - offset or 1), "red" if failed else "cyan")
        duration_ms = ((span.end_time or end) - (span.start_time or start)) / 1e6
        name = Text("  " * depth + span.name, style="red" if failed else "")
        table.add_row(name, span.kind.name.lower(), f"{duration_ms:.1f}", bar)
    return table


def _log_lines(records: Iterable[ReadableLogRecord], *, skip_request_log: bool = False) -> Table:
    """Log records as a table (level, logger, message): rich wraps the message column, not the row."""
    table = Table(show_header=False, box=None, pad_edge=False, expand=False)
    table.add_column("level", no_wrap=True)
    table.add_column("logger", style="dim", no_wrap=True)
    table.add_column("message", overflow="fold")
    for readable in sorted(records, key=lambda r: r.log_record.timestamp or 0):
        record = readable.log_record
        scope = readable.instrumentation_scope.name if readable.instrumentation_scope else ""
        if skip_request_log and scope == "qm_otel.requests":
            continue  # the panel's title already says method, route, status
        level = record.severity_text or "?"
        table.add_row(Text(level, style=_LEVEL_STYLE.get(level, "")), scope, str(record.body))
    return table


def _request_title(root: ReadableSpan) -> str:
    """``GET /checkout/{sku} → 502`` (the IDs go in the panel, where they never get cut)."""
    status = (root.attributes or {}).get("http.response.status_code", "?")
    return f"{root.name} → {status}"


def _ids(root: ReadableSpan) -> Table:
    """The trace ID, and the correlation ID when the client chose it: one line each."""
    attributes = root.attributes or {}
    trace_id = format(root.context.trace_id, "032x") if root.context else "?"
    correlation = attributes.get("correlation.id")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("trace_id", trace_id)
    if correlation and correlation != trace_id:
        grid.add_row("correlation.id", str(correlation))
    return grid


#: attributes worth a column in the terminal; the rest stay in the exported data
_KEY_ATTRIBUTES = ("http.request.method", "http.route", "http.response.status_code", "server.address", "reason",
                   "breaker", "state", "outcome", "from", "to", "cache", "band")
#: metrics left out of the terminal summary (still exported)
_QUIET_METRICS = frozenset({"http.server.active_requests", "http.server.request.body.size",
                            "http.server.response.body.size"}) | process_metrics.NAMES


def _number(value: float, unit: str) -> str:
    """A value for people: seconds as ms, ``{...}`` units dropped, no float noise."""
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    shown = "" if unit.startswith("{") or not unit else f" {unit}"
    return f"{value:,.0f}{shown}" if float(value).is_integer() else f"{value:,.3g}{shown}"


def _point_row(unit: str, point: Any) -> tuple[str, str]:
    attributes = point.attributes or {}
    labels = " ".join(str(attributes[key]) for key in _KEY_ATTRIBUTES if key in attributes)
    if isinstance(point, NumberDataPoint):
        return labels, _number(point.value, unit)
    count = point.count
    mean = point.sum / count if count else 0.0
    if count == 1:
        return labels, _number(mean, unit)
    return labels, f"n={count} mean {_number(mean, unit)} max {_number(point.max, unit)}"


def metrics_table(data: MetricsData | None) -> Table:
    """Every metric point the reader collected: the metric's name, then one row per attribute set."""
    table = Table(title="key metrics", show_lines=False, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric · method route status / peer", overflow="fold")
    table.add_column("value", no_wrap=True, justify="right")
    if data is None:
        return table
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name in _QUIET_METRICS or not isinstance(metric.data, Histogram | Sum | Gauge):
                    continue
                points: Sequence[Any] = metric.data.data_points
                if isinstance(metric.data, Gauge):  # one series per state: show the one that is 1
                    points = [p for p in points if getattr(p, "value", 1) != 0]
                rows = sorted(_point_row(metric.unit or "", point) for point in points)
                if not rows:
                    continue
                if len(rows) == 1 and not rows[0][0]:
                    table.add_row(Text(metric.name, style="bold"), rows[0][1])
                    continue
                table.add_row(Text(metric.name, style="bold"), "")
                for labels, value in rows:
                    table.add_row(f"  {labels}", value)
    return table


def render(
    console: Console,
    spans: Sequence[ReadableSpan],
    logs: Sequence[ReadableLogRecord],
    metrics: MetricsData | None,
) -> int:
    """Print one panel per request (waterfall + its logs), the other logs, then the metrics.

    Returns:
        The number of request traces drawn.

    """
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        if span.context:
            by_trace[span.context.trace_id].append(span)
    logs_by_trace: dict[int, list[ReadableLogRecord]] = defaultdict(list)
    for readable in logs:
        logs_by_trace[readable.log_record.trace_id or 0].append(readable)

    def root_of(trace_spans: list[ReadableSpan]) -> ReadableSpan:
        roots = [s for s in trace_spans if s.parent is None] or trace_spans
        return min(roots, key=lambda s: s.start_time or 0)

    drawn = 0
    for trace_id, trace_spans in sorted(by_trace.items(), key=lambda item: root_of(item[1]).start_time or 0):
        root = root_of(trace_spans)
        if root.kind is not SpanKind.SERVER:
            continue
        bar_width = max(10, min(_BAR_WIDTH, console.width - 60))
        body: list[Any] = [_ids(root), waterfall(trace_spans, bar_width)]
        if logs_by_trace.get(trace_id):
            body.append(Text("logs of this trace:", style="bold"))
            body.append(_log_lines(logs_by_trace[trace_id], skip_request_log=True))
        failed = root.status.status_code is StatusCode.ERROR
        console.print(Panel(Group(*body), title=_request_title(root), border_style="red" if failed else "blue"))
        drawn += 1
    untraced = [r for r in logs if not r.log_record.trace_id]
    if untraced:
        console.print(Panel(_log_lines(untraced), title="logs outside any request"))
    console.print(metrics_table(metrics))
    return drawn


#: the logger of the event-loop watchdog's records (:mod:`qm_otel.runtime.event_loop`)
WATCHDOG_LOGGER = "qm_otel.event_loop"


def draw_stalls(console: Console, logs: Sequence[ReadableLogRecord]) -> None:
    """The event-loop watchdog's records: what blocked the loop, where, in which trace, and the stack."""
    for readable in logs:
        scope = readable.instrumentation_scope.name if readable.instrumentation_scope else ""
        if scope != WATCHDOG_LOGGER:
            continue
        record = readable.log_record
        attributes = dict(record.attributes or {})
        where = f"{attributes.get('code.file.path')}:{attributes.get('code.line.number')}"
        lines = [Text(str(record.body), style="bold yellow"),
                 Text(f"blocking line: {where} in {attributes.get('code.function.name')}"),
                 Text(f"trace_id {record.trace_id:032x} · span_id {record.span_id:016x}" if record.trace_id else
                      "outside any request", style="dim")]
        stack = str(attributes.get("code.stacktrace", "")).rstrip().splitlines()[-4:]
        lines += [Text(line, style="dim") for line in stack]
        console.print(Panel(Group(*lines), title="event-loop watchdog", border_style="yellow"))
