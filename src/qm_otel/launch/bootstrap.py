"""``setup()`` and ``shutdown()``: orchestrate the signal builders, and keep the state room in step.

Both launch paths end here: ``qm_otel.setup(app=app)`` in code, and ``opentelemetry-instrument``
through :mod:`qm_otel.launch.distro`, so both produce the same resource, exporters and log pipeline.
The builders live in :mod:`qm_otel.signals`; this module only runs them in order, writes the
start-up checkpoints, and hangs the flush on what runs at the end of a process.

The :class:`Telemetry` handle owns what its ``setup()`` put into the process, and its ``shutdown()``
removes exactly that: the export threads (the SDK's processors and readers, qm-otel's deliveries,
the event-loop watchdog, the Prometheus endpoint's server, which its reader stops), the log
handlers, the libraries instrumented and the import hooks waiting
(:class:`~qm_otel.instrumentation.libraries.Instrumentation`), the patches, hooks and environment
variables (:class:`~qm_otel.integrations.patches.PatchSet`, whose module lists each), the switch
interval and the state room's slots.

>>> import qm_otel
>>> telemetry = qm_otel.setup(service_name="checkout")          # doctest: +SKIP
>>> qm_otel.setup(service_name="checkout") is telemetry          # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Unpack

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from qm_otel import _state
from qm_otel._version import __version__
from qm_otel.core import sdk_internals
from qm_otel.core.config import SETTINGS, ConfigError, Settings, resolve_settings
from qm_otel.core.conventions import CONVENTIONS, Conventions, ConventionsError, load_with_overrides
from qm_otel.core.instruments import INSTRUMENTS, Instruments
from qm_otel.core.redaction import header_sanitize_patterns, redact_logged_urls
from qm_otel.core.setup_options import SetupOptions
from qm_otel.instrumentation import libraries
from qm_otel.integrations.patches import (
    COUNT_DROPPED,
    EXECUTOR_CONTEXT,
    OUTBOUND_PROPAGATOR,
    ROOT_LOGGER,
    SDK_LOG_LEVEL,
    URL_LOG_FILTERS,
    UVICORN_LOGGERS,
    PatchSet,
)
from qm_otel.logs.pipeline import check_log_file, route_uvicorn_loggers
from qm_otel.runtime import event_loop
from qm_otel.runtime.events import event
from qm_otel.signals import delivery
from qm_otel.signals import global_providers as signal_globals
from qm_otel.signals.logs import build_logger_provider, sdk_log_level
from qm_otel.signals.metrics import build_meter_provider
from qm_otel.signals.resource import DEFAULT_DETECTORS, DETECTORS_VARIABLE, build_resource
from qm_otel.signals.switch_interval import shorten_switch_interval
from qm_otel.signals.traces import build_tracer_provider

__all__ = ["Telemetry", "setup", "shutdown"]

_logger = logging.getLogger("qm_otel")
_LOCK = threading.RLock()


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
    """The handle ``setup()`` returns: the settings, the resource, the three providers, and what it installed.

    ``shutdown()`` removes what the handle owns (the module documentation lists it), and nothing else.
    """

    settings: Settings
    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    log_handlers: list[logging.Handler] = field(default_factory=list)
    #: puts the interpreter's switch interval back (see :mod:`qm_otel.signals.switch_interval`)
    restore_switch_interval: Callable[[], None] = field(default=lambda: None, repr=False)
    #: the OTLP deliveries its exporters send through (flushed, bounded and closed with the providers)
    deliveries: list[delivery.Delivery] = field(default_factory=list, repr=False)
    #: the libraries it instrumented and the imports it waits for
    instrumentation: libraries.Instrumentation = field(default_factory=libraries.Instrumentation, repr=False)
    #: what it patched, hooked and set in the process (:mod:`qm_otel.integrations.patches`)
    patches: PatchSet = field(default_factory=PatchSet, repr=False)
    _closed: bool = False
    #: when the process's shutdown must be over (monotonic), from the first final flush or shutdown
    _deadline: float | None = None

    def _budget(self, timeout_s: float | None, *, final: bool) -> float:
        """Seconds this flush may take.

        Once the process is shutting down (``final``), every later flush and the shutdown share one
        budget: ``shutdown_timeout_s`` from the first of them, so the lifespan's flush, the SIGTERM
        handler and ``atexit`` together never take longer.
        """
        timeout = timeout_s or self.settings.shutdown_timeout_s
        now = time.monotonic()
        if final and self._deadline is None:
            self._deadline = now + timeout
        if self._deadline is None:
            return timeout
        return max(0.0, min(timeout, self._deadline - now))

    def force_flush(self, timeout_s: float | None = None, *, final: bool = False) -> bool:
        """Export everything buffered; wait at most ``timeout_s`` (default: the shutdown timeout).

        ``final=True`` says the process is stopping (the app's lifespan ended): the time taken
        counts against the shutdown budget. A collector that is failing is not waited for.
        """
        if self._closed:
            return True
        budget = self._budget(timeout_s, final=final)
        deadline = time.monotonic() + budget

        def flush() -> None:
            self.tracer_provider.force_flush()
            self.logger_provider.force_flush()
            self.meter_provider.force_flush()
            for owned in self.deliveries:
                if not owned.closed:
                    owned.flush(deadline - time.monotonic())

        return _bounded(flush, budget)

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush and close the providers (idempotent); wait at most ``timeout_s``.

        Everything the handle owns is removed (the module documentation lists it) and the state
        room is cleared, so a later ``setup()`` builds a fresh pipeline.
        """
        with _LOCK:
            if self._closed:
                return True
            self._closed = True
            event_loop.stop()  # before the log handlers go: a stall still going is reported
            self.instrumentation.close()
            self.patches.undo()  # qm-otel's log handlers go with ROOT_LOGGER's undo, after the later patches
            if _state.PIPELINE.get() is self:
                _state.reset()
            signal_globals.mark_closed(self.tracer_provider, self.meter_provider, self.logger_provider)
        budget = self._budget(timeout_s, final=True)
        deadline = time.monotonic() + budget
        for owned in self.deliveries:
            owned.deadline = deadline

        def close() -> None:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
            self.logger_provider.shutdown()

        try:
            return _bounded(close, budget)
        finally:
            self.restore_switch_interval()


def setup(
    *,
    app: Any = None,
    span_processors: Sequence[SpanProcessor] = (),
    log_processors: Sequence[LogRecordProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    **options: Unpack[SetupOptions],
) -> Telemetry:
    """Wire traces, metrics and logs for this process, once; return the handle.

    Every setting is an optional keyword (``options``): the settings table of
    :class:`qm_otel.core.config.Settings` declares each one with its environment variables, default
    and allowed values (the README's settings table is generated from it). Precedence is
    argument > ``QM_OTEL_*`` > ``OTEL_*`` > default; ``None`` counts as not given. A second call
    changes nothing and returns the same handle (with a warning if its settings differ); ``app``
    is still instrumented. After :func:`shutdown`, ``setup()`` builds a fresh pipeline.

    Args:
        app: a FastAPI or Starlette application to instrument now (see :func:`qm_otel.instrument_app`).
        span_processors: extra span processors (e.g. an in-memory capture), added after the exporter's.
        log_processors: extra log record processors.
        metric_readers: extra metric readers.
        options: the settings, by name (``service_name="checkout"``, ``log_format="json"``, ...).

    Raises:
        ConfigError: a setting has a value qm-otel cannot use (the message names it).

    """
    started = time.perf_counter()
    given = {name: value for name, value in options.items() if value is not None}
    settings = resolve_settings(given, os.environ)
    conventions = _conventions(settings)
    with _LOCK:
        running = _state.PIPELINE.get()
        if not isinstance(running, Telemetry):
            extras = _Extras(span_processors, log_processors, metric_readers)
            telemetry = _build(settings, conventions, extras, started)
        else:
            telemetry = running
            # uvicorn may have configured its loggers since the first call (dictConfig at start-up)
            telemetry.patches.adopt(UVICORN_LOGGERS, route_uvicorn_loggers(telemetry.settings))
            if telemetry.settings != settings or span_processors or log_processors or metric_readers:
                message = "qm_otel.setup() was already called with other settings; the first call's stay in force"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
    if app is not None:
        from qm_otel.integrations.fastapi import instrument_app

        instrument_app(app)
    return telemetry


def _conventions(settings: Settings) -> Conventions:
    """Load the conventions in force, so a bad override file fails setup() and names the setting."""
    try:
        return load_with_overrides(settings.conventions_file)
    except ConventionsError as exc:
        message = f"qm-otel setting 'conventions_file' got {settings.conventions_file!r}: {exc}"
        raise ConfigError(message) from exc


def _checkpoint(action: str, started: float, message: str) -> None:
    event("BOOTSTRAP", action, "INFO", (time.perf_counter() - started) * 1000.0, message=message, logger=_logger)


def _complete(started: float, conventions: Conventions, instruments: Instruments) -> None:
    """The COMPLETE checkpoint: "Ready in N ms" at the level and status of the bootstrap band."""
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    verdict = conventions.classify("bootstrap", elapsed_ms)
    event("BOOTSTRAP", "COMPLETE", verdict.status, elapsed_ms, message=f"Ready in {elapsed_ms:.0f}ms",
          level=verdict.level, band=verdict.band, logger=_logger)
    instruments.startup_duration.set(elapsed_ms / 1000.0, {"band": verdict.band})


def _warn_once(messages: Sequence[str]) -> None:
    """One WARNING per ``OTEL_*`` variable that has no effect here (:mod:`qm_otel.core.otel_environment`)."""
    for message in messages:
        if _state.first_time(message):
            _logger.warning(message)


def _otel_env_defaults(settings: Settings, patched: PatchSet) -> None:
    """Defaults the SDK and the instrumentations read; a value the user set is left alone, ours go at shutdown."""
    # stable HTTP semantic conventions: http.server.request.duration, in seconds
    patched.set_default("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    # header values captured on spans (opt-in, OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*) are redacted
    patched.set_default("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
                        header_sanitize_patterns(settings.sensitive_fields))
    # the resource's host, OS and process attributes (signals/resource)
    patched.set_default(DETECTORS_VARIABLE, DEFAULT_DETECTORS)


class _Extras(NamedTuple):
    """Pipeline parts the caller adds after qm-otel's own (in-memory capture, a second exporter)."""

    span_processors: Sequence[SpanProcessor] = ()
    log_processors: Sequence[LogRecordProcessor] = ()
    metric_readers: Sequence[MetricReader] = ()


def _destinations(settings: Settings, extras: _Extras) -> str:
    """Where each signal goes, as the start-up record says it (``traces → otlp + in-process``)."""
    parts = []
    for name, exporter_kind, extra in (("traces", settings.traces_exporter, extras.span_processors),
                                       ("metrics", settings.metrics_exporter, extras.metric_readers),
                                       ("logs", settings.logs_exporter, extras.log_processors)):
        targets = list(exporter_kind)
        if extra:
            targets.append("in-process")
        parts.append(f"{name} → {' + '.join(targets) or 'off'}")
    exporting = any("otlp" in names for names in (settings.traces_exporter, settings.metrics_exporter,
                                                  settings.logs_exporter))
    where = f" ({settings.exporter_protocol} {settings.exporter_endpoint})" if exporting else ""
    return ", ".join(parts) + where


class _Owned(NamedTuple):
    """What the pipeline being built has put into the process so far: its handle takes them over."""

    patches: PatchSet
    instrumentation: libraries.Instrumentation


def _build(settings: Settings, conventions: Conventions, extras: _Extras, started: float) -> Telemetry:
    """Build the pipeline with the state room holding the settings; on failure, leave it empty.

    What the failed build patched, set or hooked is undone too.
    """
    SETTINGS.set(settings)
    CONVENTIONS.set(conventions)
    owned = _Owned(PatchSet(), libraries.Instrumentation())
    try:
        return _build_signals(settings, conventions, extras, started, owned)
    except BaseException:
        owned.instrumentation.close()
        owned.patches.undo()
        _state.reset()
        raise


def _build_signals(
    settings: Settings, conventions: Conventions, extras: _Extras, started: float, owned: _Owned
) -> Telemetry:
    check_log_file(settings)
    _otel_env_defaults(settings, owned.patches)
    signal_globals.forget_closed()
    owned.patches.apply(COUNT_DROPPED)
    resource = build_resource(settings)
    with delivery.collecting() as deliveries:
        owned.patches.adopt(SDK_LOG_LEVEL, sdk_log_level(os.environ.get("OTEL_LOG_LEVEL", "")))
        # logs first, so the start-up checkpoints below are exported like every other record
        logger_provider, installed = build_logger_provider(settings, resource, extras.log_processors)
        handlers = installed.handlers
        owned.patches.adopt(ROOT_LOGGER, installed.undo)
        owned.patches.adopt(UVICORN_LOGGERS, route_uvicorn_loggers(settings))
        owned.patches.adopt(URL_LOG_FILTERS, redact_logged_urls(settings.sensitive_fields))
        sdk_internals.check()  # a private SDK name that moved: one WARNING per fast path, now that it is exported
        _checkpoint("START", started, f"qm-otel {__version__} starting {settings.service_name} "
                                      f"({settings.environment})")
        _warn_once(settings.environment_warnings)
        tracer_provider = build_tracer_provider(settings, resource, extras.span_processors)
        meter_provider, instruments = build_meter_provider(settings, resource, extras.metric_readers)
    _checkpoint("CORE", started, f"providers ready: {_destinations(settings, extras)}")
    telemetry = Telemetry(settings, resource, tracer_provider, meter_provider, logger_provider, handlers,
                          shorten_switch_interval(settings), deliveries, owned.instrumentation, owned.patches)
    _state.PIPELINE.set(telemetry)
    INSTRUMENTS.set(instruments)
    libraries.INSTRUMENTATION.set(telemetry.instrumentation)
    owned.patches.apply(OUTBOUND_PROPAGATOR)
    owned.patches.apply(EXECUTOR_CONTEXT)
    instrumented = _instrument_libraries()
    _checkpoint("PARALLEL", started, f"instrumentations ready: {instrumented}correlation propagator, "
                                     "executor context")
    root_handlers = logging.getLogger().handlers
    _checkpoint("VALIDATE", started, f"log pipeline: {len(root_handlers)} root handler(s), "
                                     f"stdout {settings.stdout_format}, file {settings.log_file or 'off'}")
    owned.patches.call_at_exit(telemetry.shutdown)
    owned.patches.flush_on_sigterm(shutdown)
    _complete(started, conventions, instruments)
    return telemetry


def _instrument_libraries() -> str:
    """Instrument the libraries that are installed; name them for the start-up record.

    httpx now or when first imported (the integration reads the pipeline from the state room, which
    holds it by now); every other installed OpenTelemetry instrumentation as ``opentelemetry-instrument``
    would, each now or when its library is first imported (:mod:`qm_otel.instrumentation.libraries`; under the
    wrapper, the wrapper does it next).
    """
    from qm_otel.integrations.httpx import instrument_httpx_when_imported

    names = libraries.instrument_installed()
    if instrument_httpx_when_imported():
        names.insert(0, "httpx")
    return "".join(f"{name}, " for name in names)


def shutdown(timeout_s: float | None = None) -> bool:
    """Flush and close everything ``setup()`` built; bounded by the shutdown timeout; idempotent.

    Returns:
        True if the flush finished within the time allowed.

    """
    pipeline = _state.PIPELINE.get()
    return True if pipeline is None else pipeline.shutdown(timeout_s)
