"""Outgoing HTTP with httpx: client spans and duration metrics, the span's ``url.full`` redacted.

``traceparent`` and ``X-Correlation-ID`` are propagated by the global propagator. A process that
has not imported httpx when ``setup()`` runs does not pay for it (about 150 ms here, with its
instrumentation): it is instrumented when it is first imported, with the pipeline in force then.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from qm_otel import _state
from qm_otel.core.config import SETTINGS
from qm_otel.core.redaction import client_request_hooks
from qm_otel.instrumentation.libraries import call_when_imported, reinstrument

__all__ = ["instrument_httpx", "instrument_httpx_when_imported"]


def instrument_httpx(tracer_provider: TracerProvider, meter_provider: MeterProvider, words: Sequence[str]) -> None:
    """Instrument every httpx client (once per process; a later call re-binds to the new providers).

    Recorded by the running pipeline's :class:`~qm_otel.instrumentation.libraries.Instrumentation`,
    so its ``shutdown()`` uninstruments it.
    """
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    hook, async_hook = client_request_hooks(words)
    reinstrument("httpx", HTTPXClientInstrumentor(), tracer_provider=tracer_provider, meter_provider=meter_provider,
                 request_hook=hook, async_request_hook=async_hook)


def _instrument_with_state() -> None:
    pipeline, settings = _state.PIPELINE.get(), SETTINGS.get()
    if pipeline is not None and settings is not None:
        instrument_httpx(pipeline.tracer_provider, pipeline.meter_provider, settings.sensitive_fields)


def instrument_httpx_when_imported() -> bool:
    """Instrument httpx now if it is imported, else when it is; False when it is not installed.

    The hook waits in the running pipeline's ``Instrumentation``: its ``shutdown()`` removes it.
    """
    return call_when_imported("httpx", _instrument_with_state, key="qm-otel:httpx")
