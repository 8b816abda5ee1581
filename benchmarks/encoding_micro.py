"""Per-item cost of encoding spans and log records for OTLP: qm-otel's writer against the alternatives.

``python -m benchmarks.encoding_micro`` builds 512 server spans and 512 log records like the
benchmark app's (the request log's and the app line's attributes), then times, per item (best of
``--repeat`` runs, since this machine drifts):

- ``qm-otel protobuf``: :mod:`qm_otel.signals.encoding`, as delivery runs it (the attribute cache warm);
- ``qm-otel protobuf, cold cache``: the same with the attribute cache emptied before each run;
- ``SDK protobuf``: the OTLP exporter's own encoder (``encode_spans``/``encode_logs``, then serialise);
- ``protobuf messages (upb) in bulk``: the request message built from ``opentelemetry-proto``'s
  C-backed classes with every field passed to the constructors at once, then serialised;
- ``OTLP/JSON with orjson``: the same request as OTLP/JSON (``http/json``), dicts dumped by orjson.

Nothing is asserted: it prints a table. ``--repeat 3`` is enough for a quick look.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk._logs import LogRecordLimits
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qm_otel.logs.handler import TelemetryHandler
from qm_otel.signals import encoding
from qm_otel.signals.log_lane import QmLoggerProvider, make_lane

ITEMS = 512
CORRELATION = "0123456789abcdef0123456789abcdef"


def make_spans(resource: Resource) -> list[Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("qm_otel", "0.1.0", schema_url="https://opentelemetry.io/schemas/1.21.0")
    for n in range(ITEMS):
        span = tracer.start_span("GET", attributes={
            "http.request.method": "GET", "url.scheme": "http", "server.address": "127.0.0.1", "server.port": 8000,
            "network.protocol.version": "1.1", "url.path": f"/items/{n}", "user_agent.original": "bench/1.0",
            "client.address": "127.0.0.1", "client.port": 50000 + n % 64, "correlation.id": f"{n:032x}"})
        span.update_name("GET /items/{item_id}")
        span.set_attributes({"http.route": "/items/{item_id}", "http.response.status_code": 200})
        span.end()
    return list(exporter.get_finished_spans())


class _Keep(LogRecordExporter):
    def __init__(self) -> None:
        self.items: list[Any] = []

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.items.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        del timeout_millis
        return True


def make_logs(resource: Resource, tracer: Any) -> list[Any]:
    """Half app lines, half request-log records, through qm-otel's handler and log lane."""
    keep = _Keep()
    limits = LogRecordLimits()
    provider = QmLoggerProvider(resource=resource, shutdown_on_exit=False, log_record_limits=limits)
    processor = BatchLogRecordProcessor(keep)
    provider.add_own_processor(processor)
    handler = TelemetryHandler(None, provider, io.StringIO(), lane=make_lane(provider, limits, [processor]),
                               code_location=True)
    app = logging.getLogger("benchmarks.encoding_micro.app")
    app.propagate = False
    app.addHandler(handler)
    app.setLevel(logging.INFO)
    with tracer.start_as_current_span("request"):
        for n in range(ITEMS // 2):
            app.info("item %s read", n, extra={"item_id": n, "correlation_id": f"{n:032x}"})
            handler.write_fields("qm_otel.requests", levelno=logging.INFO, message="GET /items/{item_id} 200 1.2ms",
                                 created=time.time(), fields={
                                     "band": "optimal", "http_method": "GET", "http_status_code": 200,
                                     "url_path": f"/items/{n}", "client_address": f"127.0.0.1:{50000 + n % 64}",
                                     "component": "API", "action": "GET /items/{item_id}", "status": "SUCCESS",
                                     "event": "http_request", "duration_ms": 1.0 + n / 1000,
                                     "http_route": "/items/{item_id}", "correlation_id": f"{n:032x}"})
    provider.force_flush()
    provider.shutdown()
    return keep.items


# --- protobuf messages filled in bulk ------------------------------------------------------------

def _pb_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _pb_attributes(attributes: Any) -> list[KeyValue]:
    return [KeyValue(key=key, value=_pb_value(value)) for key, value in (attributes or {}).items()]


def upb_spans(spans: Sequence[Any]) -> bytes:
    first = spans[0]
    scope = first.instrumentation_scope
    items = []
    for span in spans:
        context = span.get_span_context()
        items.append(Span(
            trace_id=context.trace_id.to_bytes(16, "big"), span_id=context.span_id.to_bytes(8, "big"),
            name=span.name, kind=span.kind.value + 1, start_time_unix_nano=span.start_time,
            end_time_unix_nano=span.end_time, attributes=_pb_attributes(span.attributes),
            status=Status(code=span.status.status_code.value), flags=0x100))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=PbResource(attributes=_pb_attributes(first.resource.attributes)),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope.name, version=scope.version), spans=items,
                                schema_url=scope.schema_url)])])
    return bytes(request.SerializeToString())


def upb_logs(batch: Sequence[Any]) -> bytes:
    first = batch[0]
    items = []
    for item in batch:
        record = item.log_record
        items.append(LogRecord(
            time_unix_nano=record.timestamp, observed_time_unix_nano=record.observed_timestamp,
            severity_number=record.severity_number.value, severity_text=record.severity_text,
            body=_pb_value(record.body), attributes=_pb_attributes(record.attributes),
            trace_id=record.trace_id.to_bytes(16, "big"), span_id=record.span_id.to_bytes(8, "big"),
            flags=int(record.trace_flags)))
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=PbResource(attributes=_pb_attributes(first.resource.attributes)),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name="app"), log_records=items)])])
    return bytes(request.SerializeToString())


# --- OTLP/JSON with orjson -----------------------------------------------------------------------

def _json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _json_attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": key, "value": _json_value(value)} for key, value in (attributes or {}).items()]


def json_spans(spans: Sequence[Any]) -> bytes:
    first = spans[0]
    items = []
    for span in spans:
        context = span.get_span_context()
        items.append({"traceId": format(context.trace_id, "032x"), "spanId": format(context.span_id, "016x"),
                      "name": span.name, "kind": span.kind.value + 1,
                      "startTimeUnixNano": str(span.start_time), "endTimeUnixNano": str(span.end_time),
                      "attributes": _json_attributes(span.attributes),
                      "status": {"code": span.status.status_code.value}, "flags": 0x100})
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": _json_attributes(first.resource.attributes)},
        "scopeSpans": [{"scope": {"name": first.instrumentation_scope.name}, "spans": items}]}]})


def json_logs(batch: Sequence[Any]) -> bytes:
    first = batch[0]
    items = []
    for item in batch:
        record = item.log_record
        items.append({"timeUnixNano": str(record.timestamp), "observedTimeUnixNano": str(record.observed_timestamp),
                      "severityNumber": record.severity_number.value, "severityText": record.severity_text,
                      "body": _json_value(record.body), "attributes": _json_attributes(record.attributes),
                      "traceId": format(record.trace_id, "032x"), "spanId": format(record.span_id, "016x"),
                      "flags": int(record.trace_flags)})
    return orjson.dumps({"resourceLogs": [{
        "resource": {"attributes": _json_attributes(first.resource.attributes)},
        "scopeLogs": [{"scope": {"name": "app"}, "logRecords": items}]}]})


def _cold(encode: Callable[[Sequence[Any]], bytes]) -> Callable[[Sequence[Any]], bytes]:
    def run(batch: Sequence[Any]) -> bytes:
        encoding._encoded_attributes.clear()
        return encode(batch)

    return run


def per_item_us(encode: Callable[[Sequence[Any]], Any], batch: Sequence[Any], repeat: int) -> tuple[float, int]:
    best = float("inf")
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        out = encode(batch)
        best = min(best, time.perf_counter() - started)
        size = len(out if isinstance(out, bytes) else out.SerializeToString())
    return best / len(batch) * 1e6, size // len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    resource = Resource.create({"service.name": "bench"})
    spans = make_spans(resource)
    logs = make_logs(resource, TracerProvider(resource=resource).get_tracer("bench"))
    rows = [
        ("qm-otel protobuf", encoding.encode_spans, encoding.encode_logs),
        ("qm-otel protobuf, cold cache", _cold(encoding.encode_spans), _cold(encoding.encode_logs)),
        ("SDK protobuf", lambda b: sdk_encode_spans(b).SerializeToString(),
         lambda b: sdk_encode_logs(b).SerializeToString()),
        ("protobuf messages (upb) in bulk", upb_spans, upb_logs),
        ("OTLP/JSON with orjson", json_spans, json_logs),
    ]
    print(f"{ITEMS} spans, {len(logs)} log records; µs per item, best of {args.repeat}; bytes per item")
    print("| encoder | span µs | log record µs | span bytes | log bytes |")
    print("|---|---|---|---|---|")
    for label, spans_encoder, logs_encoder in rows:
        span_us, span_bytes = per_item_us(spans_encoder, spans, args.repeat)
        log_us, log_bytes = per_item_us(logs_encoder, logs, args.repeat)
        print(f"| {label} | {span_us:.1f} | {log_us:.1f} | {span_bytes} | {log_bytes} |")


if __name__ == "__main__":
    main()
