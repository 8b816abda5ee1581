"""Every private name of the OpenTelemetry SDK qm-otel reaches into, in this one module.

qm-otel's fast paths do what the SDK does, cheaper, by reading names the SDK does not publish:

- **delivery**: qm-otel's bounded buffer posts through the OTLP/HTTP exporter's own HTTP client
  (``_client._submit``/``_compress``/``_timeout``/``_endpoint``; the exporter's ``_max_request_size``
  and the metric exporter's ``_preferred_temporality``/``_preferred_aggregation``);
- **lazy exporter**: the exporter is made when it first sends, with its arguments resolved now by the
  SDK's rules (``_OTLP_HTTP_HEADERS``, ``_aggregation._get_temporality``/``_get_aggregation``);
- **log lane**: a log record goes straight into the batch processor's queue
  (``BatchLogRecordProcessor._batch_processor.emit``);
- **fast histograms**: the request histograms are aggregated by qm-otel and merged into what each
  metric reader collects (the reader's ``_collect``/``_set_collect_callback`` and per-instrument-class
  tables, the provider's ``_measurement_consumer``/``_sdk_config``, the instrument's ``_advisory``/
  ``_meter_config``, the SDK's attribute cleaning and hashing, ``View._match``);
- **fast encoding**: attributes read from ``BoundedAttributes._dict``, and the exporter's ``export``
  re-bound to qm-otel's encoder;
- **tracestate**: a ``tracestate`` read by Trace Context Level 2's grammar is stored in the API's
  ``TraceState`` without its Level 1 re-check (``TraceState._dict``);
- **set-up again**: after ``shutdown()`` a new ``setup()`` clears the API's set-once guards of the
  global providers (``_TRACER_PROVIDER_SET_ONCE`` and the like), as the API's own test utilities do;
- **queue-full counting**: the SDK's batch processor logs its drops on the logger of
  ``opentelemetry.sdk._shared_internal``;
- the API's cached scan of entry points (``opentelemetry.util._importlib_metadata``), which the
  instrumentations are found with, shared with ``opentelemetry-instrument``'s loader;
- the context key that tells instrumentations to stay quiet (``_SUPPRESS_INSTRUMENTATION_KEY``, what
  the SDK's exporters set while they send), set by qm-otel's sender threads.

:func:`check` probes every one against the installed SDK at ``setup()``. Where one has moved, that
fast path is off and the SDK's own path does the work (slower, never wrong): :func:`fell_back` says
so once per fast path, as a WARNING naming the SDK's version. The accessors below are the only code
of qm-otel that touches the names; ``tests/unit/test_sdk_internals.py`` fails if another module does.
Packages the SDK publishes under an underscore (``opentelemetry.sdk._logs``, ``opentelemetry._logs``,
``opentelemetry.semconv._incubating``) are its documented import paths, not private names.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.version import __version__ as SDK_VERSION
from opentelemetry.trace.span import TraceState

try:  # the API's entry-point scan, cached for the process: the one opentelemetry-instrument's loader made
    from opentelemetry.util._importlib_metadata import entry_points
except ImportError:  # pragma: no cover - moved: the standard library's (a scan of its own)
    from importlib.metadata import entry_points  # type: ignore[assignment]

try:  # the SDK's own cleaning, keying and defaults: a series is the one the SDK would make
    from opentelemetry.attributes import _clean_attribute_value as clean_attribute_value
    from opentelemetry.sdk.metrics._internal import _ProxyMeterConfig as ProxyMeterConfig
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes as hash_attributes
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES as DEFAULT_BOUNDARIES,
    )
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram as SDKHistogram
    from opentelemetry.trace.propagation import _SPAN_KEY as SPAN_KEY

    HISTOGRAM_NAMES: str | None = None
except ImportError as exc:  # pragma: no cover - an SDK that moved them: its own instrument, always
    HISTOGRAM_NAMES = f"{type(exc).__name__}: {exc}"
    clean_attribute_value = hash_attributes = ProxyMeterConfig = SDKHistogram = None  # type: ignore[assignment,misc]
    DEFAULT_BOUNDARIES = ()
    SPAN_KEY = "current-span"

__all__ = [
    "DEFAULT_BOUNDARIES",
    "FAST_PATHS",
    "PRIVATE_ATTRIBUTES",
    "SDK_BATCH_LOGGER",
    "SDK_VERSION",
    "SPAN_KEY",
    "SUPPRESS_INSTRUMENTATION_KEY",
    "ProxyMeterConfig",
    "SDKHistogram",
    "aggregation_customised",
    "attribute_dict",
    "check",
    "checked_trace_state",
    "clean_attribute_value",
    "consumer_reader_count",
    "entry_points",
    "exporter_endpoint",
    "exporter_max_request_size",
    "fell_back",
    "forget_global_providers",
    "forget_said",
    "hash_attributes",
    "http_client",
    "instrument_boundaries",
    "instrument_consumer",
    "instrument_meter_config",
    "lazy_exporter_names",
    "log_lane_emit",
    "meter_enabled",
    "metric_exporter_preferences",
    "post",
    "provider_config",
    "provider_consumer",
    "provider_readers",
    "reader_collect",
    "reader_histogram_aggregation",
    "reader_histogram_temporality",
    "set_reader_collect",
    "view_matches",
]

_logger = logging.getLogger("qm_otel")

#: each fast path, and what the SDK's own path costs instead when it falls back
FAST_PATHS: dict[str, str] = {
    "delivery": "spans, log records and metrics go through the SDK exporter's own export (no bounded buffer "
                "across collector outages, no retry of a refused batch)",
    "lazy exporter": "the OTLP exporters are made at setup() (a slower start)",
    "log lane": "log records take the SDK's Logger.emit path (more CPU per record)",
    "fast histograms": "the request histograms record through the SDK's instruments (more CPU per request)",
    "fast encoding": "batches are encoded by the SDK's encoder (more CPU per batch)",
    "set-up again": "a setup() after shutdown() cannot replace the global providers",
    "tracestate": "tracestate keys that Trace Context Level 2 added (e.g. foo@, a 242-character tenant) are dropped "
                  "by the API's Level 1 check",
    "queue-full counting": "items the SDK drops from a full queue are not counted in qm_otel.telemetry.dropped",
}
#: the SDK's private attribute names read here (the ownership test looks for them elsewhere)
PRIVATE_ATTRIBUTES = frozenset({
    "_client", "_submit", "_compress", "_timeout", "_endpoint", "_max_request_size", "_preferred_temporality",
    "_preferred_aggregation", "_batch_processor", "_measurement_consumer", "_reader_storages", "_sdk_config",
    "_instrument_class_aggregation", "_instrument_class_temporality", "_collect", "_set_collect_callback",
    "_advisory", "_meter_config", "_boundaries", "_record_min_max", "_match", "_dict", "_config",
    "_TRACER_PROVIDER_SET_ONCE", "_TRACER_PROVIDER", "_METER_PROVIDER_SET_ONCE", "_METER_PROVIDER",
    "_LOGGER_PROVIDER_SET_ONCE", "_LOGGER_PROVIDER",
})
#: the logger of the SDK's shared batch processor (spans and log records)
SDK_BATCH_LOGGER = "opentelemetry.sdk._shared_internal"
_CLIENT_NAMES = ("_submit", "_compress", "_timeout", "_endpoint")
_said: set[str] = set()
_said_lock = threading.Lock()


def fell_back(fast_path: str, detail: str) -> None:
    """Say once per process, as a WARNING naming the SDK's version, that ``fast_path`` uses the SDK's own path."""
    with _said_lock:
        if fast_path in _said:
            return
        _said.add(fast_path)
    _logger.warning("qm-otel: opentelemetry-sdk %s does not have what qm-otel's %s uses (%s); %s. qm-otel is "
                    "tested with the release set its package pins: install those versions to get it back",
                    SDK_VERSION, fast_path, detail, FAST_PATHS[fast_path])


# -- delivery: the OTLP/HTTP exporter's client


def http_client(exporter: Any) -> Any | None:
    """The exporter's HTTP client when it has every name :func:`post` drives, else None."""
    client = getattr(exporter, "_client", None)
    return client if all(hasattr(client, name) for name in _CLIENT_NAMES) else None


def post(client: Any, payload: bytes) -> Any:
    """One POST of an encoded request through the exporter's client: the SDK's response (or its error)."""
    return client._submit(client._compress(payload), client._timeout)


def exporter_endpoint(exporter: Any) -> str:
    """The URL the exporter posts to (its client's)."""
    return str(exporter._client._endpoint)


def exporter_max_request_size(exporter: Any, default: int) -> int:
    """The exporter's limit on one request's size (0: none), or ``default`` where it has none."""
    return max(0, int(getattr(exporter, "_max_request_size", default) or 0))


def metric_exporter_preferences(exporter: Any) -> dict[str, Any]:
    """The metric exporter's temporality and aggregation preferences, as the reader takes them."""
    return {"preferred_temporality": exporter._preferred_temporality,
            "preferred_aggregation": exporter._preferred_aggregation}


# -- lazy exporter: the SDK's defaults, resolved without making the exporter


def lazy_exporter_names(signal_name: str) -> tuple[dict[str, str], dict[str, Any]] | None:
    """The OTLP/HTTP exporter's default headers, and for metrics its default preferences; None if moved."""
    try:
        from opentelemetry.exporter.otlp.proto.http import _OTLP_HTTP_HEADERS

        preferences: dict[str, Any] = {}
        if signal_name == "metrics":
            from opentelemetry.exporter.otlp.common._aggregation import _get_aggregation, _get_temporality

            preferences = {"preferred_temporality": _get_temporality(None),
                           "preferred_aggregation": _get_aggregation(None)}
    except ImportError as exc:
        fell_back("lazy exporter", f"{type(exc).__name__}: {exc}")
        return None
    return dict(_OTLP_HTTP_HEADERS), preferences


# -- log lane


def log_lane_emit(processor: Any) -> Callable[[Any], None] | None:
    """The ``emit`` of the SDK batch log processor's queue, or None (said once) where it has none."""
    emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
    if callable(emit):
        return emit  # type: ignore[no-any-return]
    fell_back("log lane", f"{type(processor).__qualname__} has no _batch_processor.emit")
    return None


# -- fast histograms


def provider_consumer(provider: Any) -> Any:
    """The meter provider's measurement consumer (what its instruments record into)."""
    return provider._measurement_consumer


def provider_config(provider: Any) -> Any:
    """The meter provider's SDK configuration (resource, views, exemplar filter)."""
    return provider._sdk_config


def consumer_reader_count(consumer: Any) -> int:
    """How many metric readers the measurement consumer feeds."""
    return len(consumer._reader_storages)


def provider_readers(provider: Any) -> list[Any]:
    """The meter provider's metric readers, in registration order."""
    return list(provider._measurement_consumer._reader_storages)


def reader_histogram_aggregation(reader: Any) -> Any:
    """The aggregation ``reader`` prefers for histograms."""
    return reader._instrument_class_aggregation.get(SDKHistogram)


def aggregation_customised(aggregation: Any) -> bool:
    """Whether an explicit-bucket aggregation sets its own boundaries or drops min/max."""
    return aggregation._boundaries is not None or not aggregation._record_min_max


def reader_histogram_temporality(reader: Any) -> Any:
    """The temporality ``reader`` prefers for histograms (None if it has none)."""
    return reader._instrument_class_temporality.get(SDKHistogram)


def reader_collect(reader: Any) -> Any:
    """The reader's collect callback (None while it is not registered with a provider)."""
    return reader._collect


def set_reader_collect(reader: Any, collect: Any) -> None:
    """Replace the reader's collect callback."""
    reader._set_collect_callback(collect)


def instrument_consumer(instrument: Any) -> Any:
    """The measurement consumer an SDK instrument records into."""
    return instrument._measurement_consumer


def instrument_meter_config(instrument: Any) -> Any:
    """The SDK instrument's meter configuration proxy."""
    return instrument._meter_config


def instrument_boundaries(instrument: Any) -> Any:
    """The bucket boundaries the instrument's advisory parameters give (None: the default)."""
    return instrument._advisory.explicit_bucket_boundaries


def view_matches(view: Any, instrument: Any) -> bool:
    """Whether ``view`` selects ``instrument``, as the SDK decides."""
    return bool(view._match(instrument))


def meter_enabled(instrument: Any) -> Callable[[], bool]:
    """Whether the instrument's meter is enabled now (read as the SDK's ``_is_enabled`` reads it)."""
    proxy = instrument._meter_config
    return lambda: bool(proxy._config.is_enabled)


# -- fast encoding


def attribute_dict(attributes: Any) -> Any:
    """The plain dict inside the SDK's ``BoundedAttributes`` (iterated without its lock), else ``attributes``."""
    inner = getattr(attributes, "_dict", None)
    return inner if isinstance(inner, dict) else attributes


# -- tracestate by Trace Context Level 2


def checked_trace_state(members: dict[str, str]) -> TraceState:
    """A ``TraceState`` holding ``members`` as they are: checked by Level 2's grammar, in their order.

    The API's constructor checks keys by Level 1's grammar and would drop the keys Level 2 added
    (``foo@``, ``t@`` with a 15-character system, a tenant of 242 characters); where its dict has
    moved, that constructor it is (said once).
    """
    state = TraceState()
    if isinstance(getattr(state, "_dict", None), dict):
        state._dict = members
        return state
    fell_back("tracestate", "TraceState has no _dict")
    return TraceState(list(members.items()))


# -- set-up again


def forget_global_providers(tracer: bool, meter: bool, logger: bool) -> None:
    """Clear the API's set-once guard (and the provider) of each global provider named."""
    from opentelemetry._logs import _internal as logs_api
    from opentelemetry.metrics import _internal as metrics_api
    from opentelemetry.util._once import Once

    if tracer:
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
    if meter:
        metrics_api._METER_PROVIDER_SET_ONCE = Once()
        metrics_api._METER_PROVIDER = None
    if logger:
        logs_api._LOGGER_PROVIDER_SET_ONCE = Once()
        logs_api._LOGGER_PROVIDER = None


# -- the probe at setup()


def _has(module_name: str, *names: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"{module_name}: {type(exc).__name__}: {exc}"
    missing = [name for name in names if not hasattr(module, name)]
    return f"{module_name} has no {', '.join(missing)}" if missing else None


def _assigns(cls: Any, *names: str) -> str | None:
    """Whether ``cls.__init__`` assigns each of ``names`` (read from its code, nothing is made)."""
    code = getattr(getattr(cls, "__init__", None), "__code__", None)
    missing = [name for name in names if code is None or name not in code.co_names]
    return f"{cls.__qualname__}.__init__ sets no {', '.join(missing)}" if missing else None


def _probes() -> dict[str, Callable[[], str | None]]:
    def histograms() -> str | None:
        if HISTOGRAM_NAMES is not None:
            return HISTOGRAM_NAMES
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

        return (_assigns(MeterProvider, "_measurement_consumer", "_sdk_config")
                or _assigns(MetricReader, "_instrument_class_aggregation", "_instrument_class_temporality",
                            "_collect")
                or (None if hasattr(MetricReader, "_set_collect_callback") else
                    "MetricReader has no _set_collect_callback")
                or _assigns(SDKHistogram, "_advisory")
                or _assigns(ExplicitBucketHistogramAggregation, "_boundaries", "_record_min_max")
                or (None if hasattr(View, "_match") else "View has no _match")
                or _assigns(ProxyMeterConfig, "_config"))

    def log_lane() -> str | None:
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        return _assigns(BatchLogRecordProcessor, "_batch_processor") or _has(SDK_BATCH_LOGGER, "BatchProcessor")

    def encoding() -> str | None:
        from opentelemetry.attributes import BoundedAttributes

        return _assigns(BoundedAttributes, "_dict")

    def tracestate() -> str | None:
        return _assigns(TraceState, "_dict")

    def globals_() -> str | None:
        return (_has("opentelemetry.trace", "_TRACER_PROVIDER_SET_ONCE", "_TRACER_PROVIDER")
                or _has("opentelemetry.metrics._internal", "_METER_PROVIDER_SET_ONCE", "_METER_PROVIDER")
                or _has("opentelemetry._logs._internal", "_LOGGER_PROVIDER_SET_ONCE", "_LOGGER_PROVIDER")
                or _has("opentelemetry.util._once", "Once"))

    return {
        "fast histograms": histograms,
        "log lane": log_lane,
        "fast encoding": encoding,
        "tracestate": tracestate,
        "set-up again": globals_,
        "queue-full counting": lambda: _has(SDK_BATCH_LOGGER, "BatchProcessor"),
    }


def check(*, exporter: Any = None) -> dict[str, str]:
    """Probe every private name against the installed SDK; say once what falls back. ``{fast path: why}``.

    Cheap (reads classes and modules the pipeline imports anyway; makes nothing). With ``exporter``
    (an SDK OTLP/HTTP exporter already made), its client is probed too; otherwise a delivery probes
    its exporter when it makes it (:func:`http_client`).
    """
    found: dict[str, str] = {}
    for fast_path, probe in _probes().items():
        try:
            problem = probe()
        except Exception as exc:  # a probe must never fail setup()
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            found[fast_path] = problem
    if exporter is not None and http_client(exporter) is None:
        found["delivery"] = f"{type(exporter).__qualname__} has no _client with {', '.join(_CLIENT_NAMES)}"
    for fast_path, problem in found.items():
        fell_back(fast_path, problem)
    return found


def forget_said() -> None:
    """Forget what was said (tests; a new ``setup()`` says each fallback once again)."""
    with _said_lock:
        _said.clear()

