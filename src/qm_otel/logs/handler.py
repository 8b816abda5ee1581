"""One handler, one pass per record: the stdout line and the OTLP record from the same fields.

qm-otel's default pipeline used to hang two handlers on the root logger, a ``StreamHandler``
with qm-otel's formatter and the OTel ``LoggingHandler`` (opentelemetry-instrumentation-logging):
every record ran the filters twice, took two locks, read the current context twice and looked
its OTel logger up each time. :class:`TelemetryHandler` does both in one ``emit``, with the
record's extras collected once for the JSON line and the OTLP attributes.

The OTLP record is the one ``LoggingHandler`` makes — timestamp, observed timestamp, context,
severity text and number, body, attributes (every non-reserved record attribute; ``otel.event.name``
/ ``event.name`` promoted to the event name; exception type, message and stack trace); a test
compares the two record for record.
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from time import time_ns
from typing import IO, Any

from opentelemetry._logs import LogRecord, NoOpLogger
from opentelemetry.context import get_current
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import get_current_span

from qm_otel.correlation import exception_context
from qm_otel.logs.formatters import JsonFormatter, extras_of

__all__ = ["TelemetryHandler", "otel_attributes"]

_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_EVENT_NAME = "otel.event.name"
_DEPRECATED_EVENT_NAME = "event.name"
#: set while a record is being emitted: a record the SDK logs from inside the pipeline (a full
#: queue, an invalid attribute) is written to stdout but not fed back into OTLP
_EMITTING: ContextVar[bool] = ContextVar("qm_otel_emitting", default=False)


#: the request log's fields under their semantic-convention names over OTLP (JSON keeps the short ones)
_OTLP_NAMES = {"user_id": "user.id", "user_name": "user.name", "query": "url.query"}
_REQUEST_LOGGER = "qm_otel.requests"


def otel_attributes(
    record: logging.LogRecord, extras: dict[str, Any] | None = None, *, code_location: bool = False
) -> tuple[dict[str, Any], str | None]:
    """The OTLP attributes and event name of ``record``, as ``LoggingHandler`` derives them.

    ``code_location``: the ``code.*`` attributes, as ``LoggingHandler(log_code_attributes=True)``
    adds them (not for a record qm-otel made itself, whose line number is 0).
    """
    attributes = dict(extras) if extras is not None else extras_of(record)
    if record.name == _REQUEST_LOGGER:
        attributes = {_OTLP_NAMES.get(key, key): value for key, value in attributes.items()}
    if code_location and record.lineno > 0:
        attributes["code.file.path"] = record.pathname
        attributes["code.function.name"] = record.funcName
        attributes["code.line.number"] = record.lineno
    event_name = attributes.pop(_EVENT_NAME, None)
    deprecated = attributes.pop(_DEPRECATED_EVENT_NAME, None)
    if event_name is None:
        event_name = deprecated
    if record.exc_info:
        exc_type, value, tb = record.exc_info
        if exc_type is not None:
            attributes["exception.type"] = exc_type.__name__
        if value is not None and value.args:
            attributes["exception.message"] = str(value.args[0])
        if tb is not None:
            attributes["exception.stacktrace"] = "".join(traceback.format_exception(*record.exc_info))
    return attributes, event_name


class TelemetryHandler(logging.Handler):
    """Writes each record as one stdout line (``formatter``) and exports it over OTLP (``logger_provider``).

    Either part may be absent: no formatter, no stdout line; no provider, no export.
    """

    def __init__(
        self,
        formatter: logging.Formatter | None = None,
        logger_provider: LoggerProvider | None = None,
        stream: IO[str] | None = None,
        *,
        code_location: bool = False,
    ) -> None:
        super().__init__()
        self.code_location = code_location
        self.setFormatter(formatter)
        self.stream = stream if stream is not None else sys.stdout
        self.logger_provider = logger_provider
        self._loggers: dict[str, Any] = {}

    def _otel_logger(self, name: str) -> Any:
        logger = self._loggers.get(name)
        if logger is None and self.logger_provider is not None:
            logger = self.logger_provider.get_logger(name)
            self._loggers[name] = logger
        return logger

    def _export(self, record: logging.LogRecord, extras: dict[str, Any]) -> None:
        logger = self._otel_logger(record.name)
        if logger is None or isinstance(logger, NoOpLogger):
            return
        attributes, event_name = otel_attributes(record, extras, code_location=self.code_location)
        context = get_current()
        if record.exc_info and not get_current_span(context).get_span_context().is_valid:
            context = exception_context(record.exc_info[1]) or context  # a crash report after its request
        logger.emit(LogRecord(
            timestamp=int(record.created * 1e9),
            observed_timestamp=time_ns(),
            context=context or None,
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            severity_number=std_to_otel(record.levelno),
            body=record.getMessage(),
            attributes=attributes,
            event_name=event_name,
        ))

    def _write(self, record: logging.LogRecord, extras: dict[str, Any]) -> None:
        """The stdout line; a failing stream is reported like ``StreamHandler`` does, and the export goes on."""
        formatter = self.formatter
        try:
            if isinstance(formatter, JsonFormatter):
                line = formatter.format_with(record, extras)
            else:
                line = self.format(record)
            self.stream.write(line + "\n")
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the line, then export the record (not when the pipeline itself is logging)."""
        nested = _EMITTING.get()
        token = _EMITTING.set(True)
        try:
            extras = extras_of(record)
            if self.formatter is not None:
                self._write(record, extras)
            if not nested:
                self._export(record, extras)
        except RecursionError:
            raise
        except Exception:  # a broken record or stream never breaks the application's log call
            self.handleError(record)
        finally:
            _EMITTING.reset(token)

    def flush(self) -> None:
        """Flush the stream (the provider is flushed by ``qm_otel.shutdown``)."""
        self.acquire()
        try:
            if self.formatter is not None and hasattr(self.stream, "flush"):
                self.stream.flush()
        finally:
            self.release()
