"""stdout formatters: JSON for machines, readable text for development.

Both read the trace context of the record's own thread at format time (formatting runs
synchronously in the thread that logged), so the record itself is never mutated and the
OTLP handler does not receive copies of fields it already carries natively.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

__all__ = ["JsonFormatter", "TextFormatter", "format_timestamp", "trace_ids"]

_SKIP = frozenset(RESERVED_ATTRS) | {"message", "asctime", "color_message", "correlation_id"}


def format_timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2025-09-09T10:00:00.048Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def trace_ids() -> tuple[str, str] | None:
    """The current span's trace and span IDs as lower-case hex, or None outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _stringify(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not break the log call
        return f"<unprintable {type(value).__name__}>"


def _within_orjson(value: Any) -> Any:
    """Replace what orjson refuses outright (integers beyond 64 bits, inside containers too) by text."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _within_orjson(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_within_orjson(v) for v in value]
    return value


class JsonFormatter(OrjsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, service, trace/span/correlation IDs, extras."""

    def __init__(self, service: str) -> None:
        super().__init__(json_default=_stringify, reserved_attrs=list(_SKIP))
        self._service = service

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        """Fill the fixed fields first, then the record's ``extra=`` fields."""
        record.message = record.getMessage()  # as logging.Formatter.format does
        log_data["timestamp"] = format_timestamp(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data["service"] = self._service
        ids = trace_ids()
        log_data["trace_id"], log_data["span_id"] = ids if ids else (None, None)
        log_data["correlation_id"] = getattr(record, "correlation_id", None)
        super().add_fields(log_data, record, message_dict)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc_value, _ = record.exc_info
            log_data.pop("exc_info", None)
            log_data["exception"] = {
                "type": exc_type.__name__,
                "message": _stringify(exc_value),
                "stack": self.formatException(record.exc_info),
            }

    def format(self, record: logging.LogRecord) -> str:
        """Serialise; the fields are built in :meth:`add_fields`."""
        message_dict: dict[str, Any] = {}
        log_data: dict[str, Any] = {}
        self.add_fields(log_data, record, message_dict)
        try:
            return str(self.jsonify_log_record(log_data))
        except TypeError:  # orjson refuses some values without asking json_default: never fail the log call
            return str(self.jsonify_log_record(_within_orjson(log_data)))


_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_RESET = "\x1b[0m"


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL    logger [trace 1a2b3c4d] message``, coloured only on a TTY."""

    def __init__(self, colour: bool | None = None) -> None:
        super().__init__()
        self._colour = sys.stdout.isatty() if colour is None else colour

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one readable line (plus the traceback, if any)."""
        stamp = format_timestamp(record.created)[11:23]
        ids = trace_ids()
        short = f" [trace {ids[0][:8]}]" if ids else ""
        level = f"{record.levelname:<8}"
        if self._colour:
            level = f"{_COLOURS.get(record.levelname, '')}{level}{_RESET}"
        line = f"{stamp} {level} {record.name}{short} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
