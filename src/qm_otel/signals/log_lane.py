"""The log lane: qm-otel's own log records handed to the batch processor without the SDK's per-record objects.

For every record, the SDK's ``Logger.emit`` turns the API ``LogRecord`` into a ``ReadWriteLogRecord``
(every attribute cleaned into ``BoundedAttributes``) and ``BatchLogRecordProcessor.on_emit`` copies it
into a ``ReadableLogRecord``: about 20 µs a record on the caller's thread, more than writing the
record's JSON line. When the records go nowhere else than qm-otel's own OTLP/HTTP delivery, none of
that is needed: the lane puts one small :class:`LaneRecord` (the fields the OTLP encoder reads) into
the batch processor's queue, and the export thread encodes it.

The lane is used only where it gives the SDK's output exactly (a test decodes both and compares them):

- every log processor of the provider is a ``BatchLogRecordProcessor`` qm-otel made around its own
  delivery (a processor the user adds, at ``setup()`` or later, turns the lane off: it sees SDK records);
- the SDK's own log metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) are off;
- per record: at most the attribute count limit, values of the OTLP scalar types (``str`` within the
  length limit, ``bool``, 64-bit ``int``, ``float``), which ``BoundedAttributes`` keeps as they are.
  Any other record goes through the SDK's ``Logger.emit``.

The batch processor's queue is reached through its private ``_batch_processor.emit`` (SDK 1.45); where
an SDK lacks it, :func:`make_lane` returns None and every record takes the SDK path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from qm_otel.core import sdk_internals

__all__ = ["LaneRecord", "LogLane", "QmLoggerProvider", "make_lane"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class QmLoggerProvider(LoggerProvider):
    """The SDK's provider, noting when a processor other than qm-otel's own is added (the lane then steps aside)."""

    foreign_processors = False

    def add_own_processor(self, processor: LogRecordProcessor) -> None:
        """Add one of qm-otel's lane processors (the lane stays on)."""
        super().add_log_record_processor(processor)

    def add_log_record_processor(self, log_record_processor: LogRecordProcessor) -> None:
        """Add the processor as the SDK does; from now on every record takes the SDK's path, which it sees."""
        self.foreign_processors = True
        super().add_log_record_processor(log_record_processor)


class LaneRecord:
    """One log record as the OTLP encoders read it (``ReadableLogRecord``'s shape, nothing more).

    ``log_record`` is the record itself: the encoders read ``item.log_record.<field>``, ``item.resource``,
    ``item.instrumentation_scope`` and ``item.dropped_attributes``.
    """

    __slots__ = ("attributes", "body", "event_name", "instrumentation_scope", "observed_timestamp", "resource",
                 "severity_number", "severity_text", "span_id", "timestamp", "trace_flags", "trace_id")

    dropped_attributes = 0

    def __init__(  # noqa: PLR0917 - positional: once per record, one argument per OTLP field
        self, resource: Any, scope: InstrumentationScope, timestamp: int, observed_timestamp: int,
        span_context: SpanContext, severity_number: SeverityNumber, severity_text: str, body: Any,
        attributes: dict[str, Any], event_name: str | None,
    ) -> None:
        self.resource = resource
        self.instrumentation_scope = scope
        self.timestamp = timestamp
        self.observed_timestamp = observed_timestamp
        # as the API's LogRecord takes them from the context's span (zeros for the invalid span)
        self.trace_id, self.span_id, self.trace_flags = (
            span_context.trace_id, span_context.span_id, span_context.trace_flags)
        self.severity_number = severity_number
        self.severity_text = severity_text
        self.body = body
        self.attributes = attributes
        self.event_name = event_name

    @property
    def log_record(self) -> LaneRecord:
        """The record (the encoders' ``ReadableLogRecord.log_record``)."""
        return self


def _scalar_attributes(attributes: dict[str, Any], max_count: int | None, max_length: int | None) -> bool:
    """Whether ``BoundedAttributes`` would keep ``attributes`` exactly as they are."""
    if max_count is not None and len(attributes) > max_count:
        return False
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:
            if max_length is not None and len(value) > max_length:
                return False
        elif kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:
                return False
        elif kind is not float and kind is not bool:
            return False
        if type(key) is not str or not key:
            return False
    return True


class LogLane:
    """Hands records to qm-otel's batch processors directly (see the module's documentation)."""

    def __init__(
        self, provider: QmLoggerProvider, limits: LogRecordLimits, emitters: Sequence[Callable[[Any], None]]
    ) -> None:
        self._provider = provider
        self._resource = provider.resource
        self._max_count = limits.max_log_record_attributes
        self._max_length = limits.max_log_record_attribute_length
        self._emitters = tuple(emitters)
        self._scopes: dict[str, InstrumentationScope] = {}

    def _scope(self, name: str) -> InstrumentationScope:
        scope = self._scopes.get(name)
        if scope is None:
            scope = self._provider.get_logger(name).instrumentation_scope  # type: ignore[attr-defined]
            self._scopes[name] = scope
        return scope

    def emit(  # noqa: PLR0917 - positional: once per record, one argument per OTLP field
        self, name: str, timestamp: int, observed_timestamp: int, span_context: SpanContext,
        severity_number: SeverityNumber, severity_text: str, body: Any, attributes: dict[str, Any],
        event_name: str | None, /,
    ) -> bool:
        """Queue the record for export; False (nothing queued) when it must take the SDK's path."""
        if self._provider.foreign_processors or not _scalar_attributes(attributes, self._max_count, self._max_length):
            return False
        scope = self._scopes.get(name) or self._scope(name)
        record = LaneRecord(self._resource, scope, timestamp, observed_timestamp, span_context,
                            severity_number, severity_text, body, attributes, event_name)
        for emit in self._emitters:
            emit(record)
        return True


def make_lane(
    provider: QmLoggerProvider, limits: LogRecordLimits, processors: Sequence[BatchLogRecordProcessor]
) -> LogLane | None:
    """The lane into ``processors``, or None where it cannot give the SDK's output (module documentation)."""
    if not processors or os.environ.get(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED, "").strip().lower() == "true":
        return None
    emitters = []
    for processor in processors:
        emit = sdk_internals.log_lane_emit(processor)
        if emit is None:  # said once, naming the SDK's version
            return None
        emitters.append(emit)
    return LogLane(provider, limits, emitters)
