"""The exporter each signal's setting asks for: OTLP (HTTP/protobuf or gRPC), console, or none.

The OTLP exporters are imported only when chosen; gRPC needs the ``qm-otel[grpc]`` extra and a
missing one fails ``setup()`` with a :class:`~qm_otel.config.ConfigError` that names it.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from qm_otel.config import ConfigError, Settings
from qm_otel.signals import encoding

__all__ = ["exporter", "prometheus_reader", "signal_endpoint"]

#: per signal: the console exporter, and the OTLP exporters for http/protobuf and grpc (imported when chosen)
_EXPORTERS: dict[str, tuple[type[Any], str, str]] = {
    "traces": (
        ConsoleSpanExporter,
        "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
    ),
    "metrics": (
        ConsoleMetricExporter,
        "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
    ),
    "logs": (
        ConsoleLogRecordExporter,
        "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter",
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter",
    ),
}


#: per signal: the name of the SDK encoder its OTLP/HTTP exporter calls, and qm-otel's replacement
_FAST_ENCODERS = {
    "traces": ("encode_spans", encoding.encode_spans),
    "logs": ("encode_logs", encoding.encode_logs),
}


def signal_endpoint(settings: Settings, signal_name: str) -> str | None:
    """The endpoint to hand an OTLP exporter, or None to let it read its per-signal env var."""
    per_signal = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT"
    if "exporter_endpoint" not in settings.explicit and os.environ.get(per_signal, "").strip():
        return None
    if settings.exporter_protocol == "grpc":
        return settings.exporter_endpoint
    return f"{settings.exporter_endpoint}/v1/{signal_name}"


def _import(path: str, settings: Settings) -> Any:
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = (f"qm-otel setting 'exporter_protocol' got {settings.exporter_protocol!r}, which needs the "
                   f"gRPC exporter ({exc.name} is not installed); allowed: http/protobuf, or grpc after "
                   "`pip install 'qm-otel[grpc]'`")
        raise ConfigError(message) from exc
    return getattr(module, class_name)


def exporter(settings: Settings, signal_name: str) -> Any:
    """The exporter the signal's setting asks for (``otlp``, ``console``), or None for ``none``."""
    kind = getattr(settings, f"{signal_name}_exporter")
    console, http_path, grpc_path = _EXPORTERS[signal_name]
    if kind == "console":
        return console()
    if kind != "otlp":
        return None
    exporter_class = _import(grpc_path if settings.exporter_protocol == "grpc" else http_path, settings)
    fast = _FAST_ENCODERS.get(signal_name) if settings.exporter_protocol != "grpc" else None
    if fast is not None:  # the SDK's exporter, with the encoder that writes the bytes directly
        exporter_class = encoding.with_fast_encoding(exporter_class, *fast)
    return exporter_class(endpoint=signal_endpoint(settings, signal_name))


def prometheus_reader(settings: Settings) -> MetricReader:
    """Serve ``/metrics`` for Prometheus to scrape (the same names as Prometheus's OTLP receiver gives)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.prometheus_port, addr=settings.prometheus_host)
    except OSError as exc:
        message = (f"qm-otel setting 'prometheus_port' got {settings.prometheus_port!r}, which cannot be served on "
                   f"{settings.prometheus_host} ({exc.strerror or exc}); allowed: a free port")
        raise ConfigError(message) from exc
    return PrometheusMetricReader()
