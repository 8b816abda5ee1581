"""Let a later ``setup()`` replace the global providers an earlier one set (each builder sets its own).

The OpenTelemetry API lets each global provider be set once per process. ``shutdown()`` marks
the providers qm-otel built as closed; the next ``setup()`` forgets those (never a provider
someone else set) the way the API's own test utilities do (``opentelemetry.test.globals_test``),
so ``setup()`` → ``shutdown()`` → ``setup()`` exports again. Tracers and meters that code took
from the closed providers stay bound to them; anything asked for afterwards, and everything
qm-otel records itself, uses the new pipeline.
"""

from __future__ import annotations

from opentelemetry import _logs, metrics, trace

from qm_otel.core.instruments import CLOSED_PROVIDERS
from qm_otel.core.sdk_internals import forget_global_providers

__all__ = ["forget_closed", "mark_closed"]

def mark_closed(*providers: object) -> None:
    """Mark providers qm-otel built and shut down: a later :func:`install` may replace them."""
    for provider in providers:
        CLOSED_PROVIDERS.add(provider)


def _closed(provider: object) -> bool:
    return provider in CLOSED_PROVIDERS


def forget_closed() -> None:
    """Clear the API's set-once guards for each global provider that is one of qm-otel's closed ones."""
    forget_global_providers(tracer=_closed(trace.get_tracer_provider()),
                            meter=_closed(metrics.get_meter_provider()),
                            logger=_closed(_logs.get_logger_provider()))
