"""The tracer provider: correlation-aware trace IDs, qm-otel's ratio sampler, the span exporter."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from qm_otel._otel_environment import QUEUE_DEFAULT
from qm_otel.config import Settings
from qm_otel.correlation import CorrelationIdGenerator, CorrelationSpanProcessor
from qm_otel.sampling import ratio_sampler
from qm_otel.signals.exporters import exporters

__all__ = ["SPAN_QUEUE", "build_tracer_provider"]

#: spans the batch processor queues before it drops (the SDK's default is 2048): at full speed a request
#: thread ends spans faster than the export thread takes them for a while (2048 dropped 925 of 10,400
#: spans in the in-process benchmark); ``OTEL_BSP_MAX_QUEUE_SIZE`` sets it
SPAN_QUEUE = QUEUE_DEFAULT

_logger = logging.getLogger("qm_otel")


def build_tracer_provider(settings: Settings, resource: Resource, extra: Sequence[SpanProcessor]) -> TracerProvider:
    """The global provider: spans get the correlation's trace ID and ``correlation.id``; batch export, ``extra``."""
    sampler = (
        ratio_sampler(settings.trace_sample_ratio, settings.sample_parent_based)
        if settings.trace_sample_ratio is not None
        else None  # the SDK reads OTEL_TRACES_SAMPLER
    )
    provider = TracerProvider(
        resource=resource, shutdown_on_exit=False, id_generator=CorrelationIdGenerator(), sampler=sampler
    )
    provider.add_span_processor(CorrelationSpanProcessor())
    queue = None if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "").strip() else SPAN_QUEUE
    for span_exporter in exporters(settings, "traces"):
        provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=queue))
    for processor in extra:
        provider.add_span_processor(processor)
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _logger.warning("qm-otel: a global TracerProvider was already set; qm-otel's spans use its own")
    trace.set_tracer_provider(provider)
    return provider
