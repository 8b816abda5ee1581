"""``setup()`` and ``shutdown()``: the one place where the three OTel signals are wired.

Both launch paths end here: ``qm_otel.setup(app=app)`` in code, and ``opentelemetry-instrument``
through :mod:`qm_otel.distro`, so both produce the same resource, exporters and log pipeline.

>>> import qm_otel
>>> telemetry = qm_otel.setup(service_name="checkout")          # doctest: +SKIP
>>> qm_otel.setup(service_name="checkout") is telemetry          # doctest: +SKIP
True
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from opentelemetry import _logs, metrics, propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from qm_otel._version import __version__
from qm_otel.config import SETTING_NAMES, ConfigError, Settings, resolve_settings
from qm_otel.correlation import (
    CorrelationIdGenerator,
    CorrelationPropagator,
    CorrelationSpanProcessor,
    propagate_context_into_executors,
)
from qm_otel.logs.pipeline import install_log_handlers, remove_log_handlers, route_uvicorn_loggers
from qm_otel.metrics import register_standard_instruments
from qm_otel.redaction import redact_url
from qm_otel.sampling import ratio_sampler

__all__ = ["Telemetry", "current", "setup", "shutdown"]

_logger = logging.getLogger("qm_otel")
_LOCK = threading.RLock()
_HANDLE: Telemetry | None = None


def _bounded(work: Callable[[], object], timeout_s: float) -> bool:
    """Run ``work`` in a daemon thread and wait at most ``timeout_s``: the app never waits longer.

    The SDK's ``force_flush`` ignores its timeout, and an exporter retrying against a collector
    that is down can take its own time; the thread finishes in the background if it must.
    """
    thread = threading.Thread(target=work, name="qm-otel-flush", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


@dataclass(eq=False)
class Telemetry:
    """The handle ``setup()`` returns: the settings, the resource and the three providers."""

    settings: Settings
    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    log_handlers: list[logging.Handler] = field(default_factory=list)
    _closed: bool = False

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export everything buffered; wait at most ``timeout_s`` (default: the shutdown timeout)."""
        if self._closed:
            return True

        def flush() -> None:
            self.tracer_provider.force_flush()
            self.logger_provider.force_flush()
            self.meter_provider.force_flush()

        return _bounded(flush, timeout_s or self.settings.shutdown_timeout_s)

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush and close the providers (idempotent); wait at most ``timeout_s``."""
        with _LOCK:
            if self._closed:
                return True
            self._closed = True
            remove_log_handlers(self.log_handlers)

        def close() -> None:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
            self.logger_provider.shutdown()

        return _bounded(close, timeout_s or self.settings.shutdown_timeout_s)


def current() -> Telemetry | None:
    """The handle of the running setup, or None before ``setup()``."""
    return _HANDLE


def _signal_endpoint(settings: Settings, signal_name: str) -> str | None:
    """The endpoint to hand an OTLP exporter, or None to let it read its per-signal env var."""
    per_signal = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT"
    if "exporter_endpoint" not in settings.explicit and os.environ.get(per_signal, "").strip():
        return None
    if settings.exporter_protocol == "grpc":
        return settings.exporter_endpoint
    return f"{settings.exporter_endpoint}/v1/{signal_name}"


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


def _exporter(settings: Settings, signal_name: str) -> Any:
    """The exporter the signal's setting asks for (``otlp``, ``console``), or None for ``none``."""
    kind = getattr(settings, f"{signal_name}_exporter")
    console, http_path, grpc_path = _EXPORTERS[signal_name]
    if kind == "console":
        return console()
    if kind != "otlp":
        return None
    module_name, _, class_name = (grpc_path if settings.exporter_protocol == "grpc" else http_path).partition(":")
    exporter_class = getattr(importlib.import_module(module_name), class_name)
    return exporter_class(endpoint=_signal_endpoint(settings, signal_name))


def _prometheus_reader(settings: Settings) -> MetricReader:
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


def build_resource(settings: Settings) -> Resource:
    """The resource every signal carries: service, environment, instance, host, process, distro.

    Host, OS and process attributes come from the SDK's detectors; qm-otel asks for them by
    default through ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` (left alone if the user set it),
    because the SDK re-runs the process-dependent ones after ``fork`` only when named there.
    """
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "host,os,process")
    return Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            "telemetry.distro.name": "qm-otel",
            "telemetry.distro.version": __version__,
        }
    )


def _set_global_providers(tracer: TracerProvider, meter: MeterProvider) -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _logger.warning("qm-otel: a global TracerProvider was already set; qm-otel's spans use its own")
    trace.set_tracer_provider(tracer)
    metrics.set_meter_provider(meter)


def _propagate_correlation_outbound() -> None:
    """Outgoing requests carry ``X-Correlation-ID`` beside whatever ``OTEL_PROPAGATORS`` chose."""
    current_propagator = propagate.get_global_textmap()
    members = getattr(current_propagator, "_propagators", [current_propagator])
    if not any(isinstance(member, CorrelationPropagator) for member in members):
        propagate.set_global_textmap(CompositePropagator([*members, CorrelationPropagator()]))


def _instrument_httpx(handle: Telemetry) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    words = handle.settings.sensitive_fields

    def redact(span: Any, request: Any) -> None:
        if span.is_recording():
            span.set_attribute("url.full", redact_url(str(request.url), words))

    async def redact_async(span: Any, request: Any) -> None:
        redact(span, request)

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=handle.tracer_provider, meter_provider=handle.meter_provider,
                                request_hook=redact, async_request_hook=redact_async)


def _flush_on_sigterm() -> None:
    """Chain a SIGTERM handler that flushes (bounded) and then dies by the signal as before.

    uvicorn re-raises a captured SIGTERM after its graceful shutdown, with the handler that was
    there before it started: so ``atexit`` never runs, but this handler does. Installed only
    when SIGTERM still has its default action, from the main thread: a handler someone else
    installed (uvicorn's own, while it serves) is never replaced.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        del frame
        shutdown()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _atexit_shutdown() -> None:
    shutdown()


def setup(
    *,
    app: Any = None,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    exporter_protocol: str | None = None,
    exporter_endpoint: str | None = None,
    traces_exporter: str | None = None,
    metrics_exporter: str | None = None,
    logs_exporter: str | None = None,
    metric_export_interval_ms: int | None = None,
    log_format: str | None = None,
    log_level: str | None = None,
    excluded_urls: Sequence[str] | str | None = None,
    shutdown_timeout_s: float | None = None,
    correlation_headers: Sequence[str] | str | None = None,
    trust_incoming_ids: bool | None = None,
    trace_sample_ratio: float | None = None,
    request_log: bool | None = None,
    sensitive_fields: Sequence[str] | str | None = None,
    extra_components: Sequence[str] | str | None = None,
    log_config: str | None = None,
    log_file: str | None = None,
    log_file_format: str | None = None,
    log_file_max_bytes: int | None = None,
    log_file_backups: int | None = None,
    log_file_max_age_days: float | None = None,
    conventions_file: str | None = None,
    health_path: str | None = None,
    ready_path: str | None = None,
    prometheus_host: str | None = None,
    prometheus_port: int | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    log_processors: Sequence[LogRecordProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Wire traces, metrics and logs for this process, once; return the handle.

    Every setting is optional and documented in the README's settings table with its
    environment variables; precedence is argument > ``QM_OTEL_*`` > ``OTEL_*`` > default.
    A second call changes nothing and returns the same handle (with a warning if its settings
    differ); ``app`` is still instrumented.

    Args:
        app: a FastAPI application to instrument now (see :func:`qm_otel.instrument_app`).
        service_name: ``QM_OTEL_SERVICE_NAME`` / ``OTEL_SERVICE_NAME``.
        service_version: ``QM_OTEL_SERVICE_VERSION``.
        environment: ``QM_OTEL_ENVIRONMENT`` (``deployment.environment.name``).
        exporter_protocol: ``QM_OTEL_EXPORTER_OTLP_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``.
        exporter_endpoint: ``QM_OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``.
        traces_exporter: ``QM_OTEL_TRACES_EXPORTER`` / ``OTEL_TRACES_EXPORTER``: otlp, console, none.
        metrics_exporter: ``QM_OTEL_METRICS_EXPORTER`` / ``OTEL_METRICS_EXPORTER``.
        logs_exporter: ``QM_OTEL_LOGS_EXPORTER`` / ``OTEL_LOGS_EXPORTER``.
        metric_export_interval_ms: ``QM_OTEL_METRIC_EXPORT_INTERVAL`` / ``OTEL_METRIC_EXPORT_INTERVAL``.
        log_format: ``QM_OTEL_LOG_FORMAT``: auto, json, text, none.
        log_level: ``QM_OTEL_LOG_LEVEL``.
        excluded_urls: ``QM_OTEL_EXCLUDED_URLS`` / ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``.
        shutdown_timeout_s: ``QM_OTEL_SHUTDOWN_TIMEOUT``.
        correlation_headers: ``QM_OTEL_CORRELATION_HEADERS``: incoming ID headers, in priority order.
        trust_incoming_ids: ``QM_OTEL_TRUST_INCOMING_IDS``: False on public edges.
        trace_sample_ratio: ``QM_OTEL_TRACE_SAMPLE_RATIO`` (or ``OTEL_TRACES_SAMPLER=...traceidratio``).
        request_log: ``QM_OTEL_REQUEST_LOG``: one record per HTTP request.
        sensitive_fields: ``QM_OTEL_SENSITIVE_FIELDS``: words that mark a header/query parameter sensitive.
        extra_components: ``QM_OTEL_EXTRA_COMPONENTS``: the application's own event components.
        log_config: ``QM_OTEL_LOG_CONFIG``: a dictConfig JSON file instead of ``log_format``.
        log_file: ``QM_OTEL_LOG_FILE``: also log to this rotating, gzip-compressed file.
        log_file_format: ``QM_OTEL_LOG_FILE_FORMAT``: json, pipe or text.
        log_file_max_bytes: ``QM_OTEL_LOG_FILE_MAX_BYTES``.
        log_file_backups: ``QM_OTEL_LOG_FILE_BACKUPS``.
        log_file_max_age_days: ``QM_OTEL_LOG_FILE_MAX_AGE_DAYS``.
        conventions_file: ``QM_OTEL_CONVENTIONS_FILE``: overrides merged over the packaged conventions.
        health_path: ``QM_OTEL_HEALTH_PATH`` (liveness, default ``/healthz``).
        ready_path: ``QM_OTEL_READY_PATH`` (readiness, default ``/readyz``).
        prometheus_host: ``QM_OTEL_PROMETHEUS_HOST`` / ``OTEL_EXPORTER_PROMETHEUS_HOST``.
        prometheus_port: ``QM_OTEL_PROMETHEUS_PORT`` / ``OTEL_EXPORTER_PROMETHEUS_PORT``.
        span_processors: extra span processors (e.g. an in-memory capture), added after the exporter's.
        log_processors: extra log record processors.
        metric_readers: extra metric readers.

    Raises:
        ConfigError: a setting has a value qm-otel cannot use.

    """
    started = time.perf_counter()
    given = {name: value for name, value in locals().items() if name in SETTING_NAMES and value is not None}
    settings = resolve_settings(given, os.environ)
    _check_conventions(settings)
    global _HANDLE  # noqa: PLW0603 - the process-wide handle is the point of setup()
    with _LOCK:
        handle = _HANDLE
        if handle is None:
            handle = _build(settings, span_processors, log_processors, metric_readers, started)
            _HANDLE = handle
        else:
            # uvicorn may have configured its loggers since the first call (dictConfig at start-up)
            route_uvicorn_loggers(handle.settings)
            if handle.settings != settings or span_processors or log_processors or metric_readers:
                message = "qm_otel.setup() was already called with other settings; the first call's stay in force"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
    if app is not None:
        from qm_otel.fastapi import instrument_app

        instrument_app(app)
    return handle


def _check_conventions(settings: Settings) -> None:
    """Load the conventions in force now, so a bad override file fails setup() and names the setting."""
    from qm_otel.conventions import ConventionsError, load_with_overrides

    try:
        load_with_overrides(settings.conventions_file)
    except ConventionsError as exc:
        message = f"qm-otel setting 'conventions_file' got {settings.conventions_file!r}: {exc}"
        raise ConfigError(message) from exc


def _checkpoint(action: str, started: float, message: str) -> None:
    from qm_otel.events import event

    event("BOOTSTRAP", action, "INFO", (time.perf_counter() - started) * 1000.0, message=message,
          logger=_logger)


def _complete(started: float) -> None:
    """The COMPLETE checkpoint: "Ready in N ms" at the level and status of the bootstrap band."""
    from qm_otel.conventions import classify
    from qm_otel.events import event

    elapsed_ms = (time.perf_counter() - started) * 1000.0
    verdict = classify("bootstrap", elapsed_ms)
    event("BOOTSTRAP", "COMPLETE", verdict.status, elapsed_ms, message=f"Ready in {elapsed_ms:.0f}ms",
          level=verdict.level, band=verdict.band, logger=_logger)
    metrics.get_meter("qm_otel").create_gauge(
        "qm_otel.startup.duration", unit="s", description="Duration of qm_otel.setup(), classified by band"
    ).set(elapsed_ms / 1000.0, {"band": verdict.band})


def _build(
    settings: Settings,
    span_processors: Sequence[SpanProcessor],
    log_processors: Sequence[LogRecordProcessor],
    metric_readers: Sequence[MetricReader],
    started: float,
) -> Telemetry:
    # Stable HTTP semantic conventions (http.server.request.duration in seconds) unless the user
    # chose a mode; read by the instrumentations when they first instrument.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    # header values captured on spans (opt-in, OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*) are redacted
    os.environ.setdefault("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
                          ",".join(f".*{word}.*" for word in settings.sensitive_fields))
    resource = build_resource(settings)

    # logs first, so the start-up checkpoints below are exported like every other record
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    log_exporter = _exporter(settings, "logs")
    if log_exporter is not None:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    for log_processor in log_processors:
        logger_provider.add_log_record_processor(log_processor)
    exporting_logs = log_exporter is not None or bool(log_processors)
    _logs.set_logger_provider(logger_provider)
    handlers = install_log_handlers(settings, logger_provider if exporting_logs else None)
    _checkpoint("START", started, f"qm-otel {__version__} starting {settings.service_name} "
                                  f"({settings.environment})")

    sampler = (
        ratio_sampler(settings.trace_sample_ratio, settings.sample_parent_based)
        if settings.trace_sample_ratio is not None
        else None  # the SDK reads OTEL_TRACES_SAMPLER
    )
    tracer_provider = TracerProvider(
        resource=resource, shutdown_on_exit=False, id_generator=CorrelationIdGenerator(), sampler=sampler
    )
    tracer_provider.add_span_processor(CorrelationSpanProcessor())
    span_exporter = _exporter(settings, "traces")
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    for span_processor in span_processors:
        tracer_provider.add_span_processor(span_processor)
    readers = list(metric_readers)
    if settings.metrics_exporter == "prometheus":
        readers.insert(0, _prometheus_reader(settings))
    metric_exporter = _exporter(settings, "metrics")
    if metric_exporter is not None:
        readers.insert(
            0,
            PeriodicExportingMetricReader(
                metric_exporter, export_interval_millis=settings.metric_export_interval_ms
            ),
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    _set_global_providers(tracer_provider, meter_provider)
    register_standard_instruments(meter_provider)
    _checkpoint("CORE", started, f"providers ready: traces → {settings.traces_exporter}, metrics → "
                                 f"{settings.metrics_exporter}, logs → {settings.logs_exporter} "
                                 f"({settings.exporter_protocol} {settings.exporter_endpoint})")

    handle = Telemetry(settings, resource, tracer_provider, meter_provider, logger_provider, handlers)
    _propagate_correlation_outbound()
    propagate_context_into_executors()
    _instrument_httpx(handle)
    _checkpoint("PARALLEL", started, "instrumentations ready: httpx, correlation propagator, executor context")

    root_handlers = logging.getLogger().handlers
    _checkpoint("VALIDATE", started, f"log pipeline: {len(root_handlers)} root handler(s), "
                                     f"stdout {settings.stdout_format}, file {settings.log_file or 'off'}")
    atexit.register(_atexit_shutdown)
    _flush_on_sigterm()
    _complete(started)
    return handle


def shutdown(timeout_s: float | None = None) -> bool:
    """Flush and close everything ``setup()`` built; bounded by the shutdown timeout; idempotent.

    Returns:
        True if the flush finished within the time allowed.

    """
    handle = _HANDLE
    if handle is None:
        return True
    return handle.shutdown(timeout_s)
