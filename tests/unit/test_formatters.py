"""stdout formatters: JSON fields, trace IDs from the current span, hostile values."""

from __future__ import annotations

import json
import logging
import re

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from qm_otel.logs.formatters import JsonFormatter, TextFormatter, format_timestamp


def record(msg: object = "hello %s", args: tuple[object, ...] = ("world",), **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("app.module", logging.WARNING, __file__, 10, msg, args, None)
    rec.created = 1757412000.048
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_timestamp_is_iso_utc_with_milliseconds() -> None:
    assert format_timestamp(1757412000.048) == "2025-09-09T10:00:00.048Z"


def test_json_fields_outside_a_span() -> None:
    line = json.loads(JsonFormatter("svc").format(record(user_id=7)))
    assert line == {
        "timestamp": "2025-09-09T10:00:00.048Z", "level": "WARNING", "logger": "app.module",
        "message": "hello world", "service": "svc", "trace_id": None, "span_id": None, "correlation_id": None,
        "user_id": 7,
    }


def test_json_and_text_carry_the_current_span_ids() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        ctx = span.get_span_context()
        line = json.loads(JsonFormatter("svc").format(record()))
        text = TextFormatter(colour=False).format(record())
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert f"[trace {format(ctx.trace_id, '032x')[:8]}]" in text
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} WARNING  app\.module \[trace [0-9a-f]{8}\] hello world$", text)


def test_json_exception_fields() -> None:
    try:
        raise ValueError("bad | value\nsecond line")
    except ValueError:
        import sys

        rec = record(exc_info=sys.exc_info())
    rec.exc_info = rec.__dict__["exc_info"]
    line = json.loads(JsonFormatter("svc").format(rec))
    assert line["exception"]["type"] == "ValueError"
    assert line["exception"]["message"] == "bad | value\nsecond line"
    assert "Traceback" in line["exception"]["stack"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@given(st.text(), st.one_of(st.text(), st.integers(), st.floats(allow_nan=True), st.binary()))
def test_json_never_raises_and_is_one_line(message: str, value: object) -> None:
    out = JsonFormatter("svc").format(record(msg=message, args=(), odd=value, broken=Unprintable()))
    assert "\n" not in out
    parsed = json.loads(out)
    assert parsed["message"] == message
    assert parsed["broken"] == "<unprintable Unprintable>"
