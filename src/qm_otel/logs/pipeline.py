"""Attach qm-otel's handlers to the root logger, exactly once, and route uvicorn's loggers into them.

The root logger gets two handlers: the OTel log handler from
``opentelemetry-instrumentation-logging`` (the SDK's own handler is deprecated), which exports every
record with the trace and span IDs of the context that wrote it, and one stdout handler. Both are
tagged, so installing again first removes the old pair: there is never a duplicate line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider

from qm_otel.config import Settings
from qm_otel.correlation import correlation_id
from qm_otel.logs.formatters import JsonFormatter, TextFormatter

__all__ = [
    "UVICORN_LOGGERS",
    "UVICORN_LOG_CONFIG",
    "install_log_handlers",
    "remove_log_handlers",
    "route_uvicorn_loggers",
]

#: A ``dictConfig`` JSON file for ``uvicorn --log-config``: uvicorn's loggers keep no handlers of
#: their own and propagate to the root logger, so their lines go through qm-otel's pipeline.
UVICORN_LOG_CONFIG = Path(__file__).with_name("uvicorn.json")
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_TAG = "_qm_otel_handler"


def _tag(handler: logging.Handler) -> logging.Handler:
    setattr(handler, _TAG, True)
    return handler


def _foreign_otel_handler(handler: logging.Handler) -> bool:
    """A log handler installed by someone else that already exports to OTel (avoid doubles)."""
    return type(handler).__name__ == "LoggingHandler" and type(handler).__module__.startswith("opentelemetry")


def route_uvicorn_loggers() -> None:
    """Make uvicorn's loggers propagate to the root logger instead of printing their own format."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


class CorrelationFilter(logging.Filter):
    """Adds ``correlation_id`` to records written while a correlation is active (never drops one).

    Set on the record, it reaches stdout as a field and the OTLP export as an attribute, so Loki
    holds it as structured metadata.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the field when a correlation is active and the record has none."""
        if not hasattr(record, "correlation_id"):
            value = correlation_id()
            if value is not None:
                record.correlation_id = value
        return True


_CORRELATION_FILTER = CorrelationFilter()


def install_log_handlers(settings: Settings, logger_provider: LoggerProvider | None) -> list[logging.Handler]:
    """Install the OTel handler (when ``logger_provider`` is given) and the stdout handler on the root logger."""
    root = logging.getLogger()
    remove_log_handlers([h for h in root.handlers if getattr(h, _TAG, False)])
    handlers: list[logging.Handler] = []
    if logger_provider is not None and not any(_foreign_otel_handler(h) for h in root.handlers):
        handlers.append(_tag(LoggingHandler(logger_provider=logger_provider)))
    stdout_format = settings.stdout_format
    if stdout_format != "none":
        stream = logging.StreamHandler(sys.stdout)
        formatter: logging.Formatter = (
            JsonFormatter(settings.service_name) if stdout_format == "json" else TextFormatter()
        )
        stream.setFormatter(formatter)
        handlers.append(_tag(stream))
    for handler in handlers:
        handler.addFilter(_CORRELATION_FILTER)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    route_uvicorn_loggers()
    return handlers


def remove_log_handlers(handlers: list[logging.Handler]) -> None:
    """Detach and close handlers installed by :func:`install_log_handlers`."""
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
        if not isinstance(handler, LoggingHandler):
            handler.close()
