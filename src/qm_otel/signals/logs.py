"""The logger provider and the root logger's handlers (OTLP, stdout, the optional rotating file)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from opentelemetry import _logs
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from qm_otel.core.config import Settings
from qm_otel.core.otel_environment import queue_size
from qm_otel.logs.pipeline import RootHandlers, install_root_handlers
from qm_otel.signals.delivery import LogDelivery
from qm_otel.signals.exporters import exporters
from qm_otel.signals.log_lane import QmLoggerProvider, make_lane

__all__ = ["build_logger_provider"]



def build_logger_provider(
    settings: Settings, resource: Resource, extra: Sequence[LogRecordProcessor]
) -> tuple[LoggerProvider, RootHandlers]:
    """The global provider (batch export, then ``extra``) and the handlers installed on the root logger.

    With the handlers comes what puts the root logger back (``shutdown()``); routing uvicorn's
    loggers and redacting logged URLs are ``setup()``'s, each with its own undo.

    Set globally before the handlers are installed: a ``log_config`` file's OTLP handler binds to
    the global provider. The OTLP handler is installed only when records go somewhere. When every
    exporter is one of qm-otel's OTLP/HTTP deliveries and no processor is the user's, the handler
    gets the log lane (:mod:`qm_otel.signals.log_lane`) too.
    """
    limits = LogRecordLimits()
    provider = QmLoggerProvider(resource=resource, shutdown_on_exit=False, log_record_limits=limits)
    log_exporters = exporters(settings, "logs")
    queue = queue_size("OTEL_BLRP")
    processors = [BatchLogRecordProcessor(log_exporter, max_queue_size=queue) for log_exporter in log_exporters]
    for processor in processors:
        provider.add_own_processor(processor)
    for added in extra:
        provider.add_log_record_processor(added)
    _logs.set_logger_provider(provider)
    exporting = bool(log_exporters) or bool(extra)
    own = not extra and all(isinstance(log_exporter, LogDelivery) for log_exporter in log_exporters)
    lane = make_lane(provider, limits, processors) if own else None
    return provider, install_root_handlers(settings, provider if exporting else None, lane)


def sdk_log_level(value: str) -> Callable[[], None] | None:
    """``OTEL_LOG_LEVEL``: the level of the SDK's own loggers (``opentelemetry.*``), which the SDK never reads.

    The value was checked by the settings (debug, info, warn, warning, error, critical). Returns the
    undo (the level it replaced, put back if the level is still this one), or None: nothing changed.
    """
    if not value.strip():
        return None
    logger = logging.getLogger("opentelemetry")
    before = logger.level
    logger.setLevel({"warn": "WARNING"}.get(value.strip().lower(), value.strip().upper()))
    ours = logger.level

    def undo() -> None:
        if logger.level == ours:
            logger.setLevel(before)

    return undo
