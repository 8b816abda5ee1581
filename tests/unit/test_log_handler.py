"""The one-pass TelemetryHandler makes the OTLP record the OTel LoggingHandler makes, and the same stdout line."""

from __future__ import annotations

import copy
import io
import logging
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.logging import handler as otel_handler
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from qm_otel.logs.formatters import RESERVED_ATTRS, JsonFormatter
from qm_otel.logs.handler import TelemetryHandler

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12).filter(
    lambda n: n not in RESERVED_ATTRS and not n.startswith("_"))
VALUES = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                   st.booleans(), st.lists(st.text(max_size=5), max_size=3))


def capture() -> tuple[LoggerProvider, InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider, exporter


def comparable(exporter: InMemoryLogRecordExporter) -> dict[str, Any]:
    (finished,) = exporter.get_finished_logs()
    log = finished.log_record
    return {
        "timestamp": log.timestamp,
        "trace_id": log.trace_id,
        "span_id": log.span_id,
        "severity_text": log.severity_text,
        "severity_number": log.severity_number,
        "body": log.body,
        "attributes": dict(log.attributes or {}),
        "event_name": log.event_name,
        "scope": finished.instrumentation_scope.name if finished.instrumentation_scope else None,
    }


def make_record(level: int, extras: dict[str, Any], failing: bool) -> logging.LogRecord:
    exc_info = None
    if failing:
        try:
            raise ValueError("card declined", 42)
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("app.checkout", level, __file__, 7, "order %s placed", ("A-1",), exc_info)
    for key, value in extras.items():
        setattr(record, key, value)
    return record


def test_an_event_name_that_is_not_text_is_exported_as_text_and_keeps_its_batch() -> None:
    """Regression (hypothesis found it): ``extra={"event.name": 0}`` made the SDK's encoder drop the batch."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    provider, exporter = capture()
    handler = TelemetryHandler(None, provider, io.StringIO())
    handler.emit(make_record(logging.INFO, {"event.name": 0}, failing=False))
    handler.emit(make_record(logging.INFO, {"otel.event.name": 3.5}, failing=False))
    finished = exporter.get_finished_logs()
    assert [log.log_record.event_name for log in finished] == ["0", "3.5"]
    assert len(encode_logs(finished).resource_logs[0].scope_logs[0].log_records) == 2


def test_reserved_attributes_are_the_otel_handlers() -> None:
    assert RESERVED_ATTRS == otel_handler._RESERVED_ATTRS


@settings(max_examples=150, deadline=None)
@given(
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]),
    extras=st.dictionaries(NAMES, VALUES, max_size=6),
    event=st.sampled_from([None, ("otel.event.name", "order_placed"), ("event.name", "legacy"),
                           ("both", None)]),
    failing=st.booleans(),
    in_span=st.booleans(),
)
def test_otlp_record_and_stdout_line_match_the_two_handlers_it_replaces(
    level: int, extras: dict[str, Any], event: tuple[str, str | None] | None, failing: bool, in_span: bool
) -> None:
    if event == ("both", None):
        extras = {**extras, "otel.event.name": "stable", "event.name": "deprecated"}
    elif event is not None:
        extras = {**extras, event[0]: event[1]}
    record = make_record(level, extras, failing)
    reference_provider, reference = capture()
    ours_provider, ours = capture()
    stream = io.StringIO()
    ours_handler = TelemetryHandler(JsonFormatter("svc"), ours_provider, stream)
    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("work") if in_span else None
    from opentelemetry import trace

    with trace.use_span(span) if span is not None else _nothing():
        LoggingHandler(logger_provider=reference_provider).emit(copy.copy(record))
        ours_handler.emit(copy.copy(record))
        expected_line = JsonFormatter("svc").format(copy.copy(record))
    expected = comparable(reference)
    if expected["event_name"] is not None and not isinstance(expected["event_name"], str):
        # the one deliberate difference: the OTLP event name is a string (the SDK's encoder refuses
        # anything else, and with it the whole batch); LoggingHandler passes the value on as it is
        expected["event_name"] = str(expected["event_name"])
    got = comparable(ours)
    assert got == expected
    assert stream.getvalue() == expected_line + "\n"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_a_record_logged_by_the_pipeline_itself_is_written_but_not_fed_back() -> None:
    provider, exporter = capture()
    stream = io.StringIO()
    handler = TelemetryHandler(JsonFormatter("svc"), provider, stream)
    inner = logging.getLogger("opentelemetry.sdk.internal")

    class Noisy(SimpleLogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:  # like a full queue warning from inside the SDK
            handler.handle(inner.makeRecord(inner.name, logging.WARNING, __file__, 1, "queue is full", (), None))
            super().on_emit(log_record)

    provider.add_log_record_processor(Noisy(InMemoryLogRecordExporter()))
    handler.handle(make_record(logging.INFO, {}, failing=False))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "queue is full" in lines[1]
    assert [r.log_record.body for r in exporter.get_finished_logs()] == ["order A-1 placed"]


def test_either_part_may_be_absent() -> None:
    provider, exporter = capture()
    TelemetryHandler(None, provider, io.StringIO()).emit(make_record(logging.INFO, {}, failing=False))
    assert len(exporter.get_finished_logs()) == 1
    stream = io.StringIO()
    TelemetryHandler(JsonFormatter("svc"), None, stream).emit(make_record(logging.INFO, {}, failing=False))
    assert '"message":"order A-1 placed"' in stream.getvalue()


def test_a_broken_stream_does_not_break_the_log_call(capsys: Any) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    provider, exporter = capture()
    logging.raiseExceptions = True
    TelemetryHandler(JsonFormatter("svc"), provider, Broken()).handle(make_record(logging.INFO, {}, failing=False))
    assert "No space left on device" in capsys.readouterr().err
    assert len(exporter.get_finished_logs()) == 1  # the export does not depend on stdout


def test_extras_are_found_whatever_order_the_record_was_built_in() -> None:
    from qm_otel.logs.formatters import extras_of

    record = make_record(logging.INFO, {"order_id": "A-1", "items": 3}, failing=False)
    assert extras_of(record) == {"order_id": "A-1", "items": 3}
    shuffled = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    shuffled.__dict__ = {"user_id": 7, **{k: v for k, v in reversed(record.__dict__.items())}}
    assert extras_of(shuffled) == {"user_id": 7, "items": 3, "order_id": "A-1"}
    rebuilt = logging.makeLogRecord({**record.__dict__, "tenant": "t1"})
    assert extras_of(rebuilt) == {"order_id": "A-1", "items": 3, "tenant": "t1"}
