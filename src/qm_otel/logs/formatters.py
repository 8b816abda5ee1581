r"""Log formats: JSON for machines, the pipe-delimited execution log, readable text for development.

All three read the trace context of the thread that logged at format time (formatting runs
synchronously there), so the record is never mutated for them; ``correlation_id`` and the
execution-log fields (``component``, ``action``, ``status``, ``duration_ms``, ``event``) are set
on the record by :class:`qm_otel.logs.pipeline.CorrelationFilter` and by :mod:`qm_otel.runtime.events`.

>>> line = format_pipe(["2025-09-09T10:00:00.048Z", "BOOTSTRAP", "COMPLETE", "254", "SUCCESS", "Ready | 254ms"])
>>> line
'2025-09-09T10:00:00.048Z|BOOTSTRAP|COMPLETE|254|SUCCESS|Ready \\| 254ms'
>>> parse_pipe(line)[-1]
'Ready | 254ms'
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanContext
from pythonjsonlogger.orjson import OrjsonFormatter

from qm_otel.core.config import SETTINGS
from qm_otel.core.correlation import exception_context

__all__ = [
    "INTERNAL_ATTRS",
    "RESERVED_ATTRS",
    "JsonFormatter",
    "PipeFormatter",
    "TextFormatter",
    "extras_of",
    "format_pipe",
    "format_timestamp",
    "parse_pipe",
    "status_of",
    "trace_ids",
]

#: ``LogRecord`` attributes that are not extras: the set the OTel ``LoggingHandler`` leaves out of
#: the OTLP attributes (a test keeps the two equal)
RESERVED_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "getMessage"}
#: fields the formatters write themselves; every other non-standard record attribute is an ``extra``
_OWN_FIELDS = frozenset({"correlation_id", "event", "component", "action", "status", "duration_ms"})
#: logging-internal attributes some libraries add, never an extra in any output (stdout, file, OTLP):
#: uvicorn's coloured copy of its message
INTERNAL_ATTRS = frozenset({"color_message"})
_NOT_IN_JSON = _OWN_FIELDS | INTERNAL_ATTRS


def status_of(record: logging.LogRecord) -> str:
    """The record's execution-log status: its own, else FAILURE at ERROR and above, else INFO."""
    status = record.__dict__.get("status")
    if status is not None:
        return str(status)
    return "FAILURE" if record.levelno >= logging.ERROR else "INFO"  # the conventions: FAILURE goes with ERROR


#: a ``LogRecord``'s own attributes, in the order its constructor sets them (extras come after)
_STANDARD = tuple(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)


def extras_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's extras: every attribute that is not a standard ``LogRecord`` one, in the order they were set.

    The constructor's attributes come first, so when they are all there in that order only what follows
    them is looked at (each log call pays for this; records made otherwise are scanned whole).
    """
    attributes = record.__dict__
    keys = list(attributes)
    if len(keys) >= _STANDARD_COUNT and keys[_STANDARD_COUNT - 1] == _LAST_STANDARD and keys[0] == _FIRST_STANDARD:
        keys = keys[_STANDARD_COUNT:]
    return {key: attributes[key] for key in keys if key not in _NOT_EXTRAS}


_STANDARD_COUNT, _FIRST_STANDARD, _LAST_STANDARD = len(_STANDARD), _STANDARD[0], _STANDARD[-1]
_NOT_EXTRAS = RESERVED_ATTRS | INTERNAL_ATTRS

#: the last millisecond formatted and its text, and the last second's: ``strftime`` once per second,
#: the milliseconds once per millisecond (tuples replaced whole, so threads never see a mixed pair)
_last_second: tuple[int, str] = (-1, "")
_last_milli: tuple[int, str] = (-1, "")


def format_timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2025-09-09T10:00:00.048Z``."""
    global _last_second, _last_milli  # noqa: PLW0603 - one-entry caches
    milli = int(created * 1000)
    cached_milli, stamp = _last_milli
    if milli == cached_milli:
        return stamp
    seconds, millis = divmod(milli, 1000)  # the text is a function of the millisecond alone
    cached_second, text = _last_second
    if seconds != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)
    stamp = f"{text}.{millis:03d}Z"
    _last_milli = (milli, stamp)
    return stamp


def trace_ids(
    record: logging.LogRecord | None = None, span_context: SpanContext | None = None
) -> tuple[str, str] | None:
    """The current span's trace and span IDs as lower-case hex, or None outside a span.

    ``span_context``: the current span's, when the caller has it already. Outside a span, a
    ``record`` whose exception left a request carries that request's IDs
    (:func:`qm_otel.core.correlation.mark_exception`): the server's crash report is written after it.
    """
    context = span_context if span_context is not None else trace.get_current_span().get_span_context()
    if not context.is_valid and record is not None and record.exc_info:
        stamped = exception_context(record.exc_info[1])
        if stamped is not None:
            context = trace.get_current_span(stamped).get_span_context()
    if not context.is_valid:
        return None
    global _last_ids  # noqa: PLW0603 - a one-entry cache: a request's lines share its span
    last_context, ids = _last_ids
    if context is not last_context:
        ids = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
        _last_ids = (context, ids)
    return ids


_last_ids: tuple[SpanContext | None, tuple[str, str]] = (None, ("", ""))


def _stringify(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not break the log call
        return f"<unprintable {type(value).__name__}>"


def _within_orjson(value: Any) -> Any:
    """Replace what orjson refuses outright, inside containers too.

    Integers beyond 64 bits become text; strings with lone surrogates get them backslash-escaped.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {_within_orjson(k): _within_orjson(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_within_orjson(v) for v in value]
    return value


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-arguments: keep the template and the arguments, do not lose the record
        return f"{_stringify(record.msg)} (arguments {_stringify(record.args)})"


def _service() -> str:
    settings = SETTINGS.get()
    return settings.service_name if settings is not None else "unknown_service"


class JsonFormatter(OrjsonFormatter):
    """One JSON object per line: the execution-log record of ../shared/conventions.md plus extras.

    Fields, in order: timestamp, level, logger, message, service, trace_id, span_id,
    correlation_id, event, component, action, status, duration_ms, module, function, line (the
    log call's place, unless ``code_location`` is off), then ``extra=`` fields, then
    ``exception`` (type, message, stack) when there is one. Values orjson cannot encode are
    stringified; nothing a caller passes makes the log call fail.
    """

    def __init__(self, service: str | None = None, *, code_location: bool = True) -> None:
        super().__init__(json_default=_stringify, reserved_attrs=list(RESERVED_ATTRS | _NOT_IN_JSON))
        self._service = service
        self._code_location = code_location

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record`` as one line of JSON."""
        return self.format_with(record, extras_of(record))

    def format_with(self, record: logging.LogRecord, extras: dict[str, Any]) -> str:
        """Serialise ``record`` whose extras (:func:`extras_of`) are already collected."""
        return self.format_line(record, extras)[:-1]

    def format_line(
        self, record: logging.LogRecord, extras: dict[str, Any], span_context: SpanContext | None = None
    ) -> str:
        """:meth:`format_with` with the line end, for the current span's ``span_context`` when the caller has it."""
        record.message = message = _message(record)
        data = self._head(record.created, record.levelno, record.levelname, record.name, message,
                          trace_ids(record, span_context), extras)
        if self._code_location and record.lineno > 0:  # 0: a record qm-otel made itself (the request log)
            data["module"], data["function"], data["line"] = record.module, record.funcName, record.lineno
        for key, value in extras.items():
            if key not in _NOT_IN_JSON and key not in data:
                data[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["exception"] = {
                "type": record.exc_info[0].__name__,
                "message": _stringify(record.exc_info[1]),
                "stack": self.formatException(record.exc_info),
            }
        return _dumps(data)

    def format_fields(
        self, *, created: float, levelno: int, levelname: str, name: str, message: str, fields: dict[str, Any],
        span_context: SpanContext | None = None,
    ) -> str:
        """The line (with its end) of a record qm-otel writes itself without a ``LogRecord``.

        Equal to :meth:`format_line` for a record made with ``extra=fields`` and line number 0 (no code
        location, no exception).
        """
        data = self._head(created, levelno, levelname, name, message, trace_ids(None, span_context),
                          fields)
        for key, value in fields.items():
            if key not in _NOT_IN_JSON and key not in data:
                data[key] = value
        return _dumps(data)

    def _head(  # noqa: PLR0917 - positional: once per line, the record's parts
        self, created: float, levelno: int, levelname: str, name: str, message: str,
        ids: tuple[str, str] | None, extras: dict[str, Any],
    ) -> dict[str, Any]:
        """The fields every line has, in their order."""
        get = extras.get
        status = get("status")
        return {
            "timestamp": format_timestamp(created),
            "level": levelname,
            "logger": name,
            "message": message,
            "service": self._service or _service(),
            "trace_id": ids[0] if ids else None,
            "span_id": ids[1] if ids else None,
            "correlation_id": get("correlation_id"),
            "event": get("event"),
            "component": get("component", "SYSTEM"),
            "action": get("action", "LOG"),
            "status": str(status) if status is not None else ("FAILURE" if levelno >= logging.ERROR else "INFO"),
            "duration_ms": get("duration_ms"),
        }


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _dumps(data: dict[str, Any]) -> str:
    """One JSON line, with its line end."""
    try:
        return orjson.dumps(data, default=_stringify, option=_OPTIONS).decode("utf-8")
    except TypeError:  # orjson refuses some values without asking json_default: never fail the log call
        return orjson.dumps(_within_orjson(data), default=_stringify, option=_OPTIONS).decode("utf-8")


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "\\r").replace("\n", "\\n")


_UNESCAPE = {"\\": "\\", "|": "|", "r": "\r", "n": "\n"}


def format_pipe(fields: Sequence[str]) -> str:
    r"""Join the six execution-log fields with ``|``; ``\``, ``|``, CR and LF inside are escaped."""
    return "|".join(_escape(field) for field in fields)


def parse_pipe(line: str) -> list[str]:
    """Split one pipe-format line back into its fields (the inverse of :func:`format_pipe`)."""
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            current.append(_UNESCAPE.get(escaped, "\\" + escaped))
        elif char == "|":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


class PipeFormatter(logging.Formatter):
    """``timestamp|component|action|duration_ms|status|details``: one record, one line, always."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the execution-log line; an exception's traceback goes into ``details``."""
        get = record.__dict__.get
        details = _message(record)
        if record.exc_info:
            details += "\n" + self.formatException(record.exc_info)
        duration = get("duration_ms")
        return format_pipe(
            [
                format_timestamp(record.created),
                str(get("component", "SYSTEM")),
                str(get("action", "LOG")),
                "" if duration is None else _stringify(duration),
                status_of(record),
                details,
            ]
        )


_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_RESET = "\x1b[0m"


def _event_prefix(record: logging.LogRecord, message: str) -> str:
    """``COMPONENT action `` for an execution-log record, without repeating what the message says."""
    get = record.__dict__.get
    if get("status") is None:
        return ""
    component, action = str(get("component", "")), str(get("action", ""))
    if message.startswith(f"{component} {action}"):
        return ""
    if action and message.startswith(action):
        return f"{component} "
    return f"{component} {action} "


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL    logger [trace 1a2b3c4d] message``, coloured only on a TTY.

    When the request's correlation ID is not its trace ID (an ID the client chose), it is shown
    too: ``[trace 1a2b3c4d order-1001]``.
    """

    def __init__(self, colour: bool | None = None) -> None:
        super().__init__()
        self._colour = sys.stdout.isatty() if colour is None else colour

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one readable line (plus the traceback, if any)."""
        stamp = format_timestamp(record.created)[11:23]
        ids = trace_ids(record)
        correlation = record.__dict__.get("correlation_id")
        shown = f" {correlation}" if correlation and (not ids or str(correlation) != ids[0]) else ""
        short = f" [trace {ids[0][:8]}{shown}]" if ids else (f" [{correlation}]" if correlation else "")
        level = f"{record.levelname:<8}"
        if self._colour:
            level = f"{_COLOURS.get(record.levelname, '')}{level}{_RESET}"
        message = _message(record)
        line = f"{stamp} {level} {record.name}{short} {_event_prefix(record, message)}{message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
