"""The meter provider: the periodic OTLP reader or the Prometheus endpoint, and qm-otel's instruments."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from qm_otel import instruments
from qm_otel.breaker import state_observations
from qm_otel.caches import degraded_observations, ratio_observations
from qm_otel.config import Settings
from qm_otel.signals.exporters import exporter, prometheus_reader

__all__ = ["build_meter_provider"]


def build_meter_provider(
    settings: Settings, resource: Resource, extra: Sequence[MetricReader]
) -> tuple[MeterProvider, instruments.Instruments]:
    """The global provider (its readers first, then ``extra``) and qm-otel's instruments made on it."""
    readers = list(extra)
    if settings.metrics_exporter == "prometheus":
        readers.insert(0, prometheus_reader(settings))
    metric_exporter = exporter(settings, "metrics")
    if metric_exporter is not None:
        readers.insert(
            0, PeriodicExportingMetricReader(metric_exporter, export_interval_millis=settings.metric_export_interval_ms)
        )
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    metrics.set_meter_provider(provider)
    instruments.observe(
        provider,
        breaker_states=state_observations,
        cache_ratios=ratio_observations,
        degraded=degraded_observations,
    )
    return provider, instruments.Instruments.create(provider)
