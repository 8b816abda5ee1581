"""The tracer provider: correlation-aware trace IDs, qm-otel's ratio sampler, the span exporter."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from qm_otel.core.config import Settings
from qm_otel.core.correlation import CorrelationIdGenerator, CorrelationSpanProcessor
from qm_otel.core.otel_environment import queue_size
from qm_otel.core.sampling import ratio_sampler
from qm_otel.signals.exporters import exporters

__all__ = ["build_tracer_provider"]


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
    queue = queue_size("OTEL_BSP")
    for span_exporter in exporters(settings, "traces"):
        provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=queue))
    for processor in extra:
        provider.add_span_processor(processor)
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _logger.warning("qm-otel: a global TracerProvider was already set; qm-otel's spans use its own")
    trace.set_tracer_provider(provider)
    return provider
