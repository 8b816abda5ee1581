"""The exporter each signal's setting asks for: OTLP (HTTP/protobuf or gRPC), console, or none.

The OTLP exporters are imported only when chosen; gRPC needs the ``qm-otel[grpc]`` extra and a
missing one fails ``setup()`` with a :class:`~qm_otel.core.config.ConfigError` that names it. The
OTLP/HTTP exporter is made by its :class:`~qm_otel.signals.delivery.Delivery` when it first sends
(so ``setup()`` imports neither ``requests`` nor the protobuf modules); its settings are read here,
at ``setup()``, where :mod:`qm_otel.core.otel_environment` checked them.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, MetricsData
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from qm_otel import _state
from qm_otel.core import sdk_internals as sdk
from qm_otel.core.config import EXPORTER_GROUPS, ConfigError, Settings
from qm_otel.core.otel_environment import signal_protocol
from qm_otel.signals.delivery import ExporterTarget, LogDelivery, MetricDelivery, SpanDelivery, deliverable

__all__ = ["exporters", "prometheus_reader", "signal_endpoint"]

_logger = logging.getLogger("qm_otel")

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


#: per signal: the name of the SDK encoder its OTLP/HTTP exporter calls, and qm-otel's replacement (in
#: :mod:`qm_otel.signals.encoding`, imported when the first batch is encoded)
_FAST_ENCODERS = {"traces": "encode_spans", "logs": "encode_logs"}


def signal_endpoint(settings: Settings, signal_name: str, protocol: str | None = None) -> str | None:
    """The endpoint to hand an OTLP exporter, or None to let it read its per-signal env var.

    Over HTTP the signal's path is appended to the base endpoint, as the specification says, even
    when the base already ends in one (``…/v1/traces``); that case is reported once, naming the
    per-signal variable that takes a URL as it is.
    """
    per_signal = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT"
    if "exporter_endpoint" not in settings.explicit and os.environ.get(per_signal, "").strip():
        return None
    if (protocol or settings.exporter_protocol) == "grpc":
        return settings.exporter_endpoint
    _warn_signal_path(settings.exporter_endpoint)
    return f"{settings.exporter_endpoint}/v1/{signal_name}"


_SIGNAL_PATH = re.compile(r"/v1/(traces|metrics|logs)$")


def _warn_signal_path(endpoint: str) -> None:
    found = _SIGNAL_PATH.search(urlsplit(endpoint).path)
    if found is None or not _state.first_time(f"signal path in endpoint {endpoint}"):
        return
    signal_name = found.group(1)
    _logger.warning(
        "qm-otel: the OTLP endpoint %s already ends in /v1/%s; the specification appends each signal's path to "
        "it, so %s go to %s/v1/%s. To send to a URL as it is, set OTEL_EXPORTER_OTLP_%s_ENDPOINT=%s instead",
        endpoint, signal_name, signal_name, endpoint, signal_name, signal_name.upper(), endpoint)


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


def exporters(settings: Settings, signal_name: str) -> list[Any]:
    """The exporters the signal's setting lists, in order (none for ``none``).

    ``otlp`` (over ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` when set, else ``exporter_protocol``; the SDK's own
    names ``otlp_proto_http`` / ``otlp_proto_grpc`` fix the protocol), ``console``, and
    any exporter another package registers under the SDK's entry-point group, made as the SDK's
    configurator makes it (no arguments). ``prometheus`` is a metric reader: see
    :func:`prometheus_reader`.
    """
    made = []
    for name in getattr(settings, f"{signal_name}_exporter"):
        if name == "prometheus":
            continue
        if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
            protocol = {"otlp_proto_http": "http/protobuf", "otlp_proto_grpc": "grpc"}.get(name) or signal_protocol(
                os.environ, signal_name, settings.exporter_protocol, explicit="exporter_protocol" in settings.explicit)
            made.append(_otlp(settings, signal_name, protocol))
        elif name == "console":
            made.append(_EXPORTERS[signal_name][0]())
        else:
            made.append(_registered(signal_name, name)())
    return made


def _registered(signal_name: str, name: str) -> Any:
    from importlib.metadata import entry_points

    group = EXPORTER_GROUPS[signal_name]
    found = next(iter(entry_points(group=group, name=name)), None)
    if found is None:  # resolve_settings checked it: only an uninstall since then gets here
        message = f"qm-otel: the {signal_name} exporter {name!r} is no longer installed (entry point group {group})"
        raise ConfigError(message, setting=f"{signal_name}_exporter")
    return found.load()


def _otlp(settings: Settings, signal_name: str, protocol: str) -> Any:
    _console, http_path, grpc_path = _EXPORTERS[signal_name]
    endpoint = signal_endpoint(settings, signal_name, protocol)
    if protocol == "grpc":
        return _import(grpc_path, settings)(endpoint=endpoint)
    provider = _credential_provider(signal_name)
    lazy = None if provider else _lazy_target(signal_name, http_path, endpoint)
    if lazy is not None:  # buffered, sent by a thread of its own that makes the exporter when it first sends
        return _delivery(settings, signal_name, *lazy)
    exporter_class = _import(http_path, settings)
    try:
        inner = exporter_class(endpoint=endpoint)
    except Exception as exc:
        if provider is None:
            raise
        variable, value = provider
        message = (f"qm-otel: environment variable {variable} got {value!r}, whose credential provider failed "
                   f"({type(exc).__name__}: {exc}); allowed: a provider (entry point group "
                   "opentelemetry_otlp_credential_provider) that returns a requests.Session")
        raise ConfigError(message, setting=variable) from exc
    if deliverable(inner):  # made now (a credential provider's session, or an SDK laid out otherwise)
        preferences = sdk.metric_exporter_preferences(inner) if signal_name == "metrics" else {}
        limit = sdk.exporter_max_request_size(inner, 0)
        first = [inner]

        def build() -> Any:  # the one made here, then (in a forked child) a new one
            return first.pop() if first else exporter_class(endpoint=endpoint)

        target = ExporterTarget(build, sdk.exporter_endpoint(inner), limit)
        delivery = _delivery(settings, signal_name, target, preferences)
        delivery.exporter()
        return delivery
    sdk.fell_back("delivery", f"{type(inner).__qualname__} has no HTTP client with the names qm-otel drives")
    fast = _FAST_ENCODERS.get(signal_name)
    if fast is not None:  # an SDK whose client this version does not know: its exporter, the fast encoder
        from qm_otel.signals import encoding

        return encoding.with_fast_encoding(exporter_class, fast, getattr(encoding, fast))(endpoint=endpoint)
    return inner


def _delivery(settings: Settings, signal_name: str, target: ExporterTarget, preferences: dict[str, Any]) -> Any:
    wrapper, encode = _DELIVERIES[signal_name]
    return wrapper(target, signal_name, encode, max_items=settings.export_buffer_items,
                   max_bytes=int(settings.export_buffer_mb * 1024 * 1024), **preferences)


_CREDENTIAL_PROVIDER = "OTEL_PYTHON_EXPORTER_OTLP_HTTP_{}CREDENTIAL_PROVIDER"
#: how a delivery makes its exporter, and the keywords it takes beside (the metric exporter's preferences)
_Lazy = tuple[ExporterTarget, dict[str, Any]]
#: the release of opentelemetry-exporter-otlp-proto-http whose exporters (their arguments, settings and
#: ``_client``) the lazy path was checked against; another one gets its exporter made at setup()
_LAZY_RELEASE = "1.45."
#: the SDK's defaults: each POST's timeout, and the limit on one request (the exporter made says its own)
_DEFAULT_TIMEOUT_S = 10.0
_DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024


def _credential_provider(signal_name: str) -> tuple[str, str] | None:
    """The variable naming the signal's credential provider, and its value, in the SDK's order (the general one first).

    The provider makes the exporter's session: the exporter is then made at ``setup()``, so a
    provider that fails, fails ``setup()``.
    """
    for variable in (_CREDENTIAL_PROVIDER.format(""), _CREDENTIAL_PROVIDER.format(f"{signal_name.upper()}_")):
        if os.environ.get(variable):
            return variable, os.environ[variable]
    return None


def _lazy_target(signal_name: str, exporter_path: str, endpoint: str | None) -> _Lazy | None:
    """How to make the signal's SDK OTLP/HTTP exporter later, with every setting read now as the SDK reads it.

    The exporter's arguments are its settings resolved by the SDK's own rules (its ``_common``
    module, not imported here: the signal's variable, then the general one, then the default), so
    the exporter made later is the one ``setup()`` checked, whatever the environment holds by then.
    Also the metric exporter's temporality and aggregation, which the reader needs now. None for
    an SDK release other than the one whose exporters this was checked against
    (:data:`_LAZY_RELEASE`): the exporter is then made now, and checked at once (``deliverable``).
    """
    try:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.version import __version__
    except ImportError:
        return None
    if not __version__.startswith(_LAZY_RELEASE):
        sdk.fell_back("lazy exporter", f"opentelemetry-exporter-otlp-proto-http {__version__} is not the "
                                       f"{_LAZY_RELEASE}x release the lazy path was checked against")
        return None
    defaults = sdk.lazy_exporter_names(signal_name)
    if defaults is None:
        return None
    default_headers, preferences = defaults
    from opentelemetry.util.re import parse_env_headers

    per_signal = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_"

    def setting(name: str) -> str | None:
        return os.environ.get(f"{per_signal}{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}") or None

    base = (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318").removesuffix("/")
    url = endpoint or os.environ.get(f"{per_signal}ENDPOINT") or f"{base}/v1/{signal_name}"
    try:
        timeout = float(setting("TIMEOUT") or _DEFAULT_TIMEOUT_S)
    except ValueError:  # refused at setup() (qm_otel.core.otel_environment); as the SDK, the default
        timeout = _DEFAULT_TIMEOUT_S
    try:
        compression = Compression((setting("COMPRESSION") or "none").strip().lower())
    except ValueError:  # refused at setup() too
        compression = Compression.NoCompression
    arguments: dict[str, Any] = {
        "endpoint": url,
        "certificate_file": setting("CERTIFICATE"),
        "client_key_file": setting("CLIENT_KEY"),
        "client_certificate_file": setting("CLIENT_CERTIFICATE"),
        "headers": {key.lower(): value for key, value in default_headers.items()}
        | dict(parse_env_headers(setting("HEADERS") or "", liberal=True)),
        "timeout": timeout,
        "compression": compression,
    }

    def build() -> Any:
        module_name, _, class_name = exporter_path.partition(":")
        return getattr(importlib.import_module(module_name), class_name)(**arguments)

    return ExporterTarget(build, url, _DEFAULT_MAX_REQUEST_SIZE), preferences


def _encode_spans(spans: Sequence[Any]) -> tuple[bytes, int]:
    from qm_otel.signals import encoding

    try:
        return encoding.encode_spans(spans), len(spans)
    except encoding.Unsupported:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        return encode_spans(spans).SerializePartialToString(), len(spans)


def _encode_logs(batch: Sequence[Any]) -> tuple[bytes, int]:
    from qm_otel.signals import encoding

    try:
        return encoding.encode_logs(batch), len(batch)
    except encoding.Unsupported:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        return encode_logs(batch).SerializePartialToString(), len(batch)


def _encode_metrics(data: MetricsData) -> tuple[bytes, int]:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    points = sum(len(metric.data.data_points) for resource in data.resource_metrics
                 for scope in resource.scope_metrics for metric in scope.metrics)
    return encode_metrics(data).SerializePartialToString(), points


_DELIVERIES: dict[str, tuple[Any, Callable[[Any], tuple[bytes, int]]]] = {
    "traces": (SpanDelivery, _encode_spans),
    "logs": (LogDelivery, _encode_logs),
    "metrics": (MetricDelivery, _encode_metrics),
}


def prometheus_reader(settings: Settings) -> MetricReader:
    """Serve ``/metrics`` for Prometheus to scrape (the same names as Prometheus's OTLP receiver gives).

    Several workers of one service each serve their own instruments: with ``prometheus_ports`` > 1,
    a process takes the first free port of ``prometheus_port`` … ``prometheus_port + prometheus_ports - 1``
    and says which; Prometheus scrapes them all (README: "Prometheus and several workers").
    The reader owns the HTTP server: its ``shutdown()`` (the meter provider's, at ``shutdown()``)
    stops the server's thread and closes its socket.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    first, last = settings.prometheus_port, min(settings.prometheus_port + settings.prometheus_ports - 1, 65535)
    for port in range(first, last + 1):
        try:
            started: Any = start_http_server(port, addr=settings.prometheus_host)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and port < last:
                continue
            tried = f"{first}" if first == last else f"{first}-{last} (all taken)"
            message = (f"qm-otel setting 'prometheus_port' got {tried}, which cannot be served on "
                       f"{settings.prometheus_host} ({exc.strerror or exc}); allowed: a free port (with several "
                       "workers, QM_OTEL_PROMETHEUS_PORTS at least the number of workers)")
            raise ConfigError(message, setting="prometheus_port") from exc
        if last > first:
            _logger.info("qm-otel: this process serves /metrics on %s:%d (ports %d-%d)", settings.prometheus_host,
                         port, first, last)
        break
    served = _Served(*started) if started else None  # prometheus_client before 0.20 returned nothing to stop

    class ServingReader(PrometheusMetricReader):
        """The SDK's reader, which also stops the server serving it when it shuts down."""

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            try:
                if served is not None:
                    served.stop(timeout_millis / 1000.0)
            finally:
                super().shutdown(timeout_millis, **kwargs)

    return ServingReader()


class _Served:
    """The ``/metrics`` server and its thread; :meth:`stop` ends both (once)."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self, timeout_s: float) -> None:
        """Stop serving, close the socket, and wait at most ``timeout_s`` for the thread to end."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()  # returns once serve_forever has seen it (its poll interval, half a second)
        self._server.server_close()
        self._thread.join(max(0.0, timeout_s))
