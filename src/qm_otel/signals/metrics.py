"""The meter provider: the periodic OTLP reader or the Prometheus endpoint, qm-otel's instruments, the runtime metrics.

Every reader of the provider collects qm-otel's fast request histograms too
(:func:`qm_otel.signals.histograms.install` wraps their collect callbacks), so
:func:`~qm_otel.signals.histograms.fast_histogram` can take over the HTTP server histograms.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from qm_otel.core import instruments
from qm_otel.core.config import Settings
from qm_otel.runtime import process_metrics
from qm_otel.runtime.breaker import state_observations
from qm_otel.runtime.degraded_mode import degraded_observations, ratio_observations
from qm_otel.signals import histograms
from qm_otel.signals.exporters import exporters, prometheus_reader

__all__ = ["build_meter_provider"]


def build_meter_provider(
    settings: Settings, resource: Resource, extra: Sequence[MetricReader]
) -> tuple[MeterProvider, instruments.Instruments]:
    """The global provider (its readers first, then ``extra``) and qm-otel's instruments made on it."""
    readers: list[MetricReader] = []
    for made in exporters(settings, "metrics"):  # push exporters get a periodic reader; pull ones are readers
        readers.append(made if isinstance(made, MetricReader) else PeriodicExportingMetricReader(
            made, export_interval_millis=settings.metric_export_interval_ms))
    if "prometheus" in settings.metrics_exporter:
        readers.append(prometheus_reader(settings))
    readers.extend(extra)
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False,
                             views=process_metrics.views())
    histograms.install(provider)  # before any histogram is made: each reader merges the fast ones into its data
    metrics.set_meter_provider(provider)
    # the process and CPython metrics (settings.runtime_metrics); process.memory.usage is qm-otel's own without them
    reported = process_metrics.install(provider, enabled=settings.runtime_metrics)
    instruments.observe(
        provider,
        breaker_states=state_observations,
        cache_ratios=ratio_observations,
        degraded=degraded_observations,
        memory=process_metrics.MEMORY not in reported,
    )
    return provider, instruments.Instruments.create(provider)
