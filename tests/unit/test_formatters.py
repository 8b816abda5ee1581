"""Every format against golden records: plain, events, exceptions, unicode, huge and hostile messages."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from qm_otel.logs.formatters import (
    JsonFormatter,
    PipeFormatter,
    TextFormatter,
    extras_of,
    format_pipe,
    format_timestamp,
    parse_pipe,
)

CREATED = 1757412000.048  # 2025-09-09T10:00:00.048Z


def record(msg: object = "hello %s", args: tuple[object, ...] = ("world",), level: int = logging.WARNING,
           **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("app.module", level, __file__, 10, msg, args, None)
    rec.created = CREATED
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def failing_record() -> logging.LogRecord:
    try:
        raise ValueError("bad | value\nsecond line")
    except ValueError:
        return record("it failed", (), level=logging.ERROR, exc_info=sys.exc_info())


EVENT = {"component": "BOOTSTRAP", "action": "COMPLETE", "status": "SUCCESS", "duration_ms": 254,
         "event": "bootstrap_complete", "correlation_id": "job-42"}


def test_timestamp_is_iso_utc_with_milliseconds() -> None:
    assert format_timestamp(CREATED) == "2025-09-09T10:00:00.048Z"
    assert format_timestamp(CREATED + 1.5) == "2025-09-09T10:00:01.548Z"
    assert format_timestamp(0.0) == "1970-01-01T00:00:00.000Z"


# --- JSON --------------------------------------------------------------------------------------

def test_json_golden_plain_record() -> None:
    line = JsonFormatter("svc").format(record(user_id=7))
    assert json.loads(line) == {
        "timestamp": "2025-09-09T10:00:00.048Z", "level": "WARNING", "logger": "app.module",
        "message": "hello world", "service": "svc", "trace_id": None, "span_id": None, "correlation_id": None,
        "event": None, "component": "SYSTEM", "action": "LOG", "status": "INFO", "duration_ms": None,
        "module": "test_formatters", "function": None, "line": 10, "user_id": 7,
    }
    assert "module" not in json.loads(JsonFormatter("svc", code_location=False).format(record()))
    assert list(json.loads(line))[:4] == ["timestamp", "level", "logger", "message"]


def test_json_golden_event_record() -> None:
    line = json.loads(JsonFormatter("svc").format(record("Ready in 254ms", (), level=logging.INFO, **EVENT)))
    assert line == {
        "timestamp": "2025-09-09T10:00:00.048Z", "level": "INFO", "logger": "app.module",
        "message": "Ready in 254ms", "service": "svc", "trace_id": None, "span_id": None,
        "correlation_id": "job-42", "event": "bootstrap_complete", "component": "BOOTSTRAP",
        "action": "COMPLETE", "status": "SUCCESS", "duration_ms": 254,
        "module": "test_formatters", "function": None, "line": 10,
    }


def test_json_golden_exception() -> None:
    line = json.loads(JsonFormatter("svc").format(failing_record()))
    assert line["level"] == "ERROR"
    assert line["exception"]["type"] == "ValueError"
    assert line["exception"]["message"] == "bad | value\nsecond line"
    assert line["exception"]["stack"].startswith("Traceback (most recent call last):")
    assert line["exception"]["stack"].endswith("ValueError: bad | value\nsecond line")


def test_json_and_text_carry_the_current_span_ids() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        ctx = span.get_span_context()
        line = json.loads(JsonFormatter("svc").format(record()))
        text = TextFormatter(colour=False).format(record())
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert f"[trace {format(ctx.trace_id, '032x')[:8]}]" in text


@pytest.mark.parametrize(
    "message",
    [
        "ünïcödé ✓ 日本語 🚀",
        "x" * 1_000_000,
        'quotes " and \\ backslashes | pipes \r\n newlines \t tabs \x00 nul \x1b[31m ansi',
        "\ud800 lone surrogate",
    ],
)
def test_json_hostile_and_huge_messages_stay_one_valid_line(message: str) -> None:
    out = JsonFormatter("svc").format(record(message, ()))
    assert "\n" not in out
    parsed = json.loads(out)
    if "\ud800" not in message:
        assert parsed["message"] == message


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@given(st.text(), st.one_of(st.text(), st.integers(), st.floats(allow_nan=True), st.binary(),
                            st.lists(st.integers()), st.dictionaries(st.text(), st.integers())))
def test_json_never_raises_and_is_one_line(message: str, value: object) -> None:
    out = JsonFormatter("svc").format(record(msg=message, args=(), odd=value, broken=Unprintable()))
    assert "\n" not in out
    parsed = json.loads(out)
    assert parsed["broken"] == "<unprintable Unprintable>"


def test_bad_format_arguments_do_not_lose_the_record() -> None:
    line = json.loads(JsonFormatter("svc").format(record("%d items", ("many",))))
    assert line["message"] == "%d items (arguments ('many',))"


# --- pipe --------------------------------------------------------------------------------------

def test_pipe_golden_event_and_plain_records() -> None:
    pipe = PipeFormatter()
    assert pipe.format(record("Ready in 254ms", (), **EVENT)) == (
        "2025-09-09T10:00:00.048Z|BOOTSTRAP|COMPLETE|254|SUCCESS|Ready in 254ms")
    assert pipe.format(record()) == "2025-09-09T10:00:00.048Z|SYSTEM|LOG||INFO|hello world"


def test_pipe_golden_hostile_record() -> None:
    hostile = record("a|b\nc\\d\re", (), component="API", action="GET /x|y", status="FAILURE", duration_ms=1.5)
    line = PipeFormatter().format(hostile)
    assert line == "2025-09-09T10:00:00.048Z|API|GET /x\\|y|1.5|FAILURE|a\\|b\\nc\\\\d\\re"
    assert parse_pipe(line) == ["2025-09-09T10:00:00.048Z", "API", "GET /x|y", "1.5", "FAILURE", "a|b\nc\\d\re"]


def test_pipe_exception_stays_on_one_line() -> None:
    line = PipeFormatter().format(failing_record())
    assert "\n" not in line
    fields = parse_pipe(line)
    assert len(fields) == 6
    assert fields[5].startswith("it failed\nTraceback (most recent call last):")
    assert fields[5].endswith("ValueError: bad | value\nsecond line")


@given(st.lists(st.text(), min_size=6, max_size=6))
def test_pipe_round_trip(fields: list[str]) -> None:
    line = format_pipe(fields)
    assert "\n" not in line
    assert "\r" not in line
    assert parse_pipe(line) == fields


@given(st.text(), st.text(), st.text())
def test_pipe_formatter_round_trips_any_record(message: str, component: str, action: str) -> None:
    line = PipeFormatter().format(record(message, (), component=component, action=action, status="SUCCESS"))
    assert "\n" not in line
    assert parse_pipe(line) == ["2025-09-09T10:00:00.048Z", component, action, "", "SUCCESS", message]


# --- text --------------------------------------------------------------------------------------

def test_text_golden_lines() -> None:
    text = TextFormatter(colour=False)
    assert re.fullmatch(r"10:00:00\.048 WARNING  app\.module hello world", text.format(record()))
    assert text.format(record("Ready in 254ms", (), level=logging.INFO, **EVENT)) == (
        "10:00:00.048 INFO     app.module [job-42] BOOTSTRAP COMPLETE Ready in 254ms")
    coloured = TextFormatter(colour=True).format(record())
    assert "\x1b[33mWARNING " in coloured


def test_text_exception_is_appended() -> None:
    out = TextFormatter(colour=False).format(failing_record())
    assert out.startswith("10:00:00.048 ERROR    app.module it failed\nTraceback")


def _all(formatters: list[logging.Formatter], rec: logging.LogRecord) -> list[Any]:
    return [f.format(rec) for f in formatters]


def test_formatters_do_not_mutate_what_other_handlers_see() -> None:
    rec = record(extra_field="x")
    before = dict(rec.__dict__)
    _all([JsonFormatter("svc"), PipeFormatter(), TextFormatter(colour=False)], rec)
    added = set(rec.__dict__) - set(before)
    assert added <= {"message"}  # what logging.Formatter.format itself adds


def test_text_shows_the_correlation_id_when_it_is_not_the_trace_id() -> None:
    tracer = TracerProvider().get_tracer("t")
    text = TextFormatter(colour=False)
    with tracer.start_as_current_span("request") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        same = text.format(record(correlation_id=trace_id))
        chosen = text.format(record(correlation_id="order-1001"))
    assert f"[trace {trace_id[:8]}] hello world" in same
    assert f"[trace {trace_id[:8]} order-1001] hello world" in chosen


def test_level_and_status_agree_unless_the_record_says_otherwise() -> None:
    json_formatter, pipe = JsonFormatter("svc"), PipeFormatter()
    for level, status in ((logging.INFO, "INFO"), (logging.WARNING, "INFO"), (logging.ERROR, "FAILURE"),
                          (logging.CRITICAL, "FAILURE")):
        assert json.loads(json_formatter.format(record(level=level)))["status"] == status
        assert parse_pipe(pipe.format(record(level=level)))[4] == status
    assert json.loads(json_formatter.format(failing_record()))["status"] == "FAILURE"
    assert json.loads(json_formatter.format(record(level=logging.ERROR, status="TIMEOUT")))["status"] == "TIMEOUT"


def test_logging_internal_fields_are_in_no_output() -> None:
    rec = record(color_message="\x1b[1mhello\x1b[0m", user_id=7)
    assert "color_message" not in json.loads(JsonFormatter("svc").format(rec))
    assert extras_of(rec) == {"user_id": 7}


def test_text_does_not_repeat_what_the_message_already_says() -> None:
    text = TextFormatter(colour=False)
    request = record("GET /items/{item_id} 200 2.3ms", (), level=logging.INFO, component="API",
                     action="GET /items/{item_id}", status="SUCCESS")
    timed = record("TEMPLATE build_report SUCCESS", (), level=logging.INFO, component="TEMPLATE",
                   action="build_report", status="SUCCESS")
    assert text.format(request).endswith("app.module API GET /items/{item_id} 200 2.3ms")
    assert text.format(timed).endswith("app.module TEMPLATE build_report SUCCESS")
