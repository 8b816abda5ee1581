"""qm-otel's OTLP encoder writes the messages the SDK's encoder builds: generated spans and records, compared."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from qm_otel.signals.encoding import Unsupported, encode_logs, encode_spans, with_fast_encoding

TEXT = st.text(max_size=12)
PRIMITIVES = st.one_of(TEXT, st.booleans(), st.integers(-(2**63), 2**63 - 1),
                       st.floats(allow_nan=False), st.binary(max_size=6))
SPAN_VALUES = st.one_of(TEXT, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                        st.lists(TEXT, max_size=3), st.lists(st.integers(-5, 5), max_size=3))
ATTRIBUTES = st.dictionaries(st.text(min_size=1, max_size=8), SPAN_VALUES, max_size=5)
LOG_VALUES = st.recursive(st.one_of(st.none(), PRIMITIVES),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                          max_leaves=6)


def no_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return all(no_surrogates(k) and no_surrogates(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(no_surrogates(v) for v in value)
    return True


@st.composite
def span_specs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "name": draw(TEXT),
        "kind": draw(st.sampled_from(list(SpanKind))),
        "attributes": draw(ATTRIBUTES.filter(no_surrogates)),
        "events": draw(st.lists(st.tuples(TEXT, ATTRIBUTES.filter(no_surrogates)), max_size=2)),
        "links": draw(st.lists(st.tuples(st.booleans(), ATTRIBUTES.filter(no_surrogates)), max_size=2)),
        "status": draw(st.sampled_from([None, (StatusCode.OK, None), (StatusCode.ERROR, "boom"),
                                        (StatusCode.ERROR, None)])),
        "remote_parent": draw(st.sampled_from([None, True, False])),
        "trace_state": draw(st.sampled_from([None, (("vendor", "x1"), ("other", "y"))])),
    }


def make_spans(specs: list[dict[str, Any]], resources: list[Resource]) -> list[Any]:
    exporter = InMemorySpanExporter()
    for index, resource in enumerate(resources):
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for number, spec in enumerate(specs):
            tracer = provider.get_tracer(f"scope{number % 2}", "1.0" if number % 3 else None,
                                         schema_url="https://example/s" if number % 2 else None)
            context = None
            if spec["remote_parent"] is not None:
                state = TraceState(list(spec["trace_state"])) if spec["trace_state"] else None
                parent = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736 + index, 0x00F067AA0BA902B7,
                                     spec["remote_parent"], TraceFlags(1), state)
                context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            links = [Link(SpanContext(0xABC + n, 0xDEF + n, remote), attributes or None)
                     for n, (remote, attributes) in enumerate(spec["links"])]
            span = tracer.start_span(spec["name"], context=context, kind=spec["kind"], attributes=spec["attributes"],
                                     links=links)
            for name, attributes in spec["events"]:
                span.add_event(name, attributes)
            if spec["status"] is not None:
                span.set_status(Status(*spec["status"]))
            span.end()
    return list(exporter.get_finished_spans())


@settings(max_examples=120, deadline=None)
@given(specs=st.lists(span_specs(), min_size=1, max_size=4), two_resources=st.booleans())
def test_spans_encode_to_the_sdks_message(specs: list[dict[str, Any]], two_resources: bool) -> None:
    resources = [Resource.create({"service.name": "a", "n": 1})]
    if two_resources:
        resources.append(Resource({"service.name": "b"}, "https://example/r"))
    spans = make_spans(specs, resources)
    assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == sdk_encode_spans(spans)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.tuples(LOG_VALUES.filter(no_surrogates),
                               st.dictionaries(st.text(min_size=1, max_size=6), LOG_VALUES, max_size=4).filter(
                                   no_surrogates),
                               st.sampled_from([None, *SeverityNumber]), st.one_of(st.none(), TEXT),
                               st.booleans(), st.one_of(st.none(), TEXT)),
                     min_size=1, max_size=4),
)
def test_log_records_encode_to_the_sdks_message(records: list[tuple[Any, ...]]) -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "logs"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tracer = TracerProvider().get_tracer("t")
    for number, (body, attributes, severity, severity_text, in_span, event_name) in enumerate(records):
        logger = provider.get_logger(f"logger{number % 2}")
        span = tracer.start_span("s") if in_span else trace.INVALID_SPAN
        with trace.use_span(span):
            logger.emit(LogRecord(timestamp=1_700_000_000_000_000_000 + number, observed_timestamp=1_700_000_000_1,
                                  body=body, attributes=attributes, severity_number=severity,
                                  severity_text=severity_text, event_name=event_name,
                                  context=trace.set_span_in_context(span)))
    batch = list(exporter.get_finished_logs())
    assert ExportLogsServiceRequest.FromString(encode_logs(batch)) == sdk_encode_logs(batch)


def test_what_it_does_not_write_like_the_sdk_is_left_to_the_sdk() -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("x").emit(LogRecord(body="\ud800 lone surrogate"))
    provider.get_logger("x").emit(LogRecord(body=2**70))
    for record in exporter.get_finished_logs():
        with pytest.raises(Unsupported):
            encode_logs([record])


def test_the_exporter_uses_it_and_falls_back_to_the_sdk() -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    fast = with_fast_encoding(OTLPLogExporter, "encode_logs", encode_logs)
    assert issubclass(fast, OTLPLogExporter)
    assert fast.export is not OTLPLogExporter.export
    globals_ = fast.export.__globals__
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("x").emit(LogRecord(body="ok"))
    provider.get_logger("x").emit(LogRecord(body="huge", attributes={"n": 2**70, "m": 1}))
    ok, huge = exporter.get_finished_logs()
    assert globals_["encode_logs"]([ok]).SerializeToString() == encode_logs([ok])
    # the SDK's own message (it drops the attribute it cannot encode, and logs that)
    assert globals_["encode_logs"]([huge]) == sdk_encode_logs([huge])
    # nothing global changed: the SDK's own exporter still uses the SDK's encoder
    assert OTLPLogExporter.export.__globals__["encode_logs"] is sdk_encode_logs
    assert with_fast_encoding(OTLPLogExporter, "no_such_encoder", encode_logs) is OTLPLogExporter
