"""One handler, one pass per record: the stdout line and the OTLP record from the same fields.

:class:`TelemetryHandler` writes the stdout line and makes the OTLP record in one ``emit``: the
filters run once, one lock is taken, the current context is read once, and the record's extras are
collected once for the JSON line and the OTLP attributes (why not a ``StreamHandler`` beside the OTel
``LoggingHandler``: docs/decisions/one-log-handler.md).

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
from typing import IO, Any, Protocol

from opentelemetry._logs import LogRecord, NoOpLogger, SeverityNumber
from opentelemetry.context import Context, get_current
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import SpanContext, get_current_span

from qm_otel.core.correlation import correlation_id, exception_context
from qm_otel.logs.formatters import JsonFormatter, extras_of

__all__ = ["EXPORT_LOGGER", "LogLane", "TelemetryHandler", "otel_attributes", "write_only_here"]


class LogLane(Protocol):
    """Where a record goes to OTLP without the SDK's per-record objects (:mod:`qm_otel.signals.log_lane`)."""

    def emit(  # noqa: PLR0917 - positional: once per record, one argument per OTLP field
        self, name: str, timestamp: int, observed_timestamp: int, span_context: SpanContext,
        severity_number: SeverityNumber, severity_text: str, body: Any, attributes: dict[str, Any],
        event_name: str | None, /,
    ) -> bool:
        """Queue the record; False when it must take the SDK's ``Logger.emit`` path instead."""

_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_EVENT_NAME = "otel.event.name"
_DEPRECATED_EVENT_NAME = "event.name"
#: set while a record is being emitted: a record the SDK logs from inside the pipeline (a full
#: queue, an invalid attribute) is written to stdout but not fed back into OTLP
_EMITTING: ContextVar[bool] = ContextVar("qm_otel_emitting", default=False)
#: the logger of qm-otel's export reports (:mod:`qm_otel.signals.delivery`): its warnings and errors say an
#: export is failing, so they are written (stdout, files) but never exported over OTLP, where the export
#: they report on may be the failing one (each refused batch's report would be refused in turn, forever).
EXPORT_LOGGER = "qm_otel.export"


def write_only_here() -> None:
    """Whatever the calling thread logs from now on is written (stdout, files), never exported over OTLP.

    For the export's own threads: a record they log (a report of the export, a DEBUG line of the HTTP
    client) exported through the export it reports on would make the next send, and so on forever.
    Nothing is checked per record: the thread's context carries the flag the handler already reads.
    """
    _EMITTING.set(True)


#: the request log's fields under their semantic-convention names over OTLP (JSON keeps the short ones)
_OTLP_NAMES = {"user_id": "user.id", "user_name": "user.name", "query": "url.query"}
_REQUEST_LOGGER = "qm_otel.requests"
#: the field names a record written from its fields cannot keep as its OTLP attributes as they are
_RENAMED = frozenset(_OTLP_NAMES) | {_EVENT_NAME, _DEPRECATED_EVENT_NAME}


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
    event_name = _event_name(attributes)
    if record.exc_info:
        exc_type, value, tb = record.exc_info
        if exc_type is not None:
            attributes["exception.type"] = exc_type.__name__
        if value is not None and value.args:
            attributes["exception.message"] = str(value.args[0])
        if tb is not None:
            attributes["exception.stacktrace"] = "".join(traceback.format_exception(*record.exc_info))
    return attributes, event_name


def _event_name(attributes: dict[str, Any]) -> str | None:
    """Pop ``otel.event.name`` (else the older ``event.name``) from ``attributes``: the record's event name.

    The OTLP field is a string: any other value is turned into its text (the SDK's encoder would
    refuse it and, with it, the whole batch of records around it).
    """
    event_name = attributes.pop(_EVENT_NAME, None)
    deprecated = attributes.pop(_DEPRECATED_EVENT_NAME, None)
    if event_name is None:
        event_name = deprecated
    if event_name is None or isinstance(event_name, str):
        return event_name
    try:
        return str(event_name)
    except Exception:  # a broken __str__ never costs the record
        return f"<unprintable {type(event_name).__name__}>"


_SEVERITIES: dict[int, SeverityNumber] = {}


def _severity(levelno: int) -> SeverityNumber:
    severity = _SEVERITIES.get(levelno)
    if severity is None:
        severity = _SEVERITIES[levelno] = std_to_otel(levelno)
    return severity


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
        lane: LogLane | None = None,
    ) -> None:
        super().__init__()
        self.code_location = code_location
        self.setFormatter(formatter)
        self.stream = stream if stream is not None else sys.stdout
        self.logger_provider = logger_provider
        self._loggers: dict[str, Any] = {}
        self._lane = lane if logger_provider is not None else None

    def _otel_logger(self, name: str) -> Any:
        logger = self._loggers.get(name)
        if logger is None and self.logger_provider is not None:
            logger = self.logger_provider.get_logger(name)
            self._loggers[name] = logger
        return logger

    def _export(self, record: logging.LogRecord, extras: dict[str, Any], span_context: SpanContext) -> None:
        attributes, event_name = otel_attributes(record, extras, code_location=self.code_location)
        context = None
        if record.exc_info and not span_context.is_valid:
            context = exception_context(record.exc_info[1])  # a crash report written after its request
            if context is not None:
                span_context = get_current_span(context).get_span_context()
        self._emit_otlp(record.name, int(record.created * 1e9), record.levelno, record.levelname,
                        record.getMessage(), attributes, event_name, span_context, context)

    def _emit_otlp(  # noqa: PLR0917 - positional: once per record, one argument per field
        self, name: str, timestamp: int, levelno: int, levelname: str, body: Any, attributes: dict[str, Any],
        event_name: str | None, span_context: SpanContext, context: Context | None,
    ) -> None:
        """The OTLP record: through the lane when it takes it, else the SDK's ``Logger.emit``.

        ``span_context`` is the current span's (or the crash's, whose ``context`` is then given).
        """
        severity_text = _SEVERITY_TEXT.get(levelname, levelname)
        severity = _severity(levelno)
        lane = self._lane
        if lane is not None and lane.emit(name, timestamp, time_ns(), span_context, severity,
                                          severity_text, body, attributes, event_name):
            return
        logger = self._otel_logger(name)
        if logger is None or isinstance(logger, NoOpLogger):
            return
        logger.emit(LogRecord(
            timestamp=timestamp,
            observed_timestamp=time_ns(),
            context=context or get_current() or None,
            severity_text=severity_text,
            severity_number=severity,
            body=body,
            attributes=attributes,
            event_name=event_name,
        ))

    def _write(self, record: logging.LogRecord, extras: dict[str, Any], span_context: SpanContext) -> None:
        """The stdout line; a failing stream is reported like ``StreamHandler`` does, and the export goes on."""
        formatter = self.formatter
        try:
            if type(formatter) is JsonFormatter:
                line = formatter.format_line(record, extras, span_context)
            else:
                line = self.format(record) + "\n"
            stream = self.stream
            stream.write(line)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    @property
    def writes_directly(self) -> bool:
        """Whether :meth:`write_fields` can write this handler's line (JSON, or no line) without a ``LogRecord``."""
        return self.formatter is None or isinstance(self.formatter, JsonFormatter)

    def write_fields(self, name: str, *, levelno: int, message: str, fields: dict[str, Any], created: float) -> None:
        """Write a record qm-otel makes itself (the request log) from its fields: no ``LogRecord``, no handler pass.

        The same stdout line and OTLP record as ``logging.getLogger(name).handle()`` of a record made
        with ``extra=fields`` and line number 0 would give through this handler and qm-otel's
        correlation filter; the caller checked that nothing else would see that record
        (:func:`qm_otel.logs.pipeline.direct_handler`). ``fields`` gets ``correlation_id``.
        """
        if levelno < self.level:
            return
        if "correlation_id" not in fields:
            active = correlation_id()
            if active is not None:
                fields["correlation_id"] = active
        levelname = logging.getLevelName(levelno)
        span_context = get_current_span().get_span_context()
        exporting = self.logger_provider is not None and not _EMITTING.get()
        token = _EMITTING.set(True) if exporting else None
        try:
            formatter = self.formatter
            if isinstance(formatter, JsonFormatter):
                line = formatter.format_fields(created=created, levelno=levelno, levelname=levelname, name=name,
                                               message=message, fields=fields, span_context=span_context)
                with self.lock:  # type: ignore[union-attr]  # createLock() made it in __init__
                    self.stream.write(line)
                    self.stream.flush()
            if exporting:
                # the fields are the attributes (nothing changes them after this call) unless a name differs
                attributes, event_name = fields, None
                if not _RENAMED.isdisjoint(fields):
                    attributes = ({_OTLP_NAMES.get(key, key): value for key, value in fields.items()}
                                  if name == _REQUEST_LOGGER else dict(fields))
                    event_name = _event_name(attributes)
                self._emit_otlp(name, int(created * 1e9), levelno, levelname, message,
                                attributes, event_name, span_context, None)
        except RecursionError:
            raise
        except Exception:  # a broken stream never breaks the request
            self.handleError(logging.makeLogRecord({"name": name, "levelno": levelno, "levelname": levelname,
                                                    "msg": message, **fields}))
        finally:
            if token is not None:
                _EMITTING.reset(token)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the line, then export the record (not when the pipeline itself is logging, nor an export's failure)."""
        # the pipeline's own records (the SDK logging from inside an export) are written, not exported again;
        # neither are the reports of a failing export (EXPORT_LOGGER)
        exporting = self.logger_provider is not None and not _EMITTING.get() and not (
            record.name == EXPORT_LOGGER and record.levelno >= logging.WARNING)
        token = _EMITTING.set(True) if exporting else None
        try:
            extras = extras_of(record)
            span_context = get_current_span().get_span_context()  # once, for the line and the OTLP record
            if self.formatter is not None:
                self._write(record, extras, span_context)
            if exporting:
                self._export(record, extras, span_context)
        except RecursionError:
            raise
        except Exception:  # a broken record or stream never breaks the application's log call
            self.handleError(record)
        finally:
            if token is not None:
                _EMITTING.reset(token)

    def flush(self) -> None:
        """Flush the stream (the provider is flushed by ``qm_otel.shutdown``)."""
        self.acquire()
        try:
            if self.formatter is not None and hasattr(self.stream, "flush"):
                self.stream.flush()
        finally:
            self.release()
