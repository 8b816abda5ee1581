"""Outgoing HTTP with httpx: client spans and duration metrics, the span's ``url.full`` redacted.

``traceparent`` and ``X-Correlation-ID`` are propagated by the global propagator.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from qm_otel.redaction import client_request_hooks

__all__ = ["instrument_httpx"]


def instrument_httpx(tracer_provider: TracerProvider, meter_provider: MeterProvider, words: Sequence[str]) -> None:
    """Instrument every httpx client (once per process; a later call re-binds to the new providers)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    hook, async_hook = client_request_hooks(words)
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider,
                            request_hook=hook, async_request_hook=async_hook)
