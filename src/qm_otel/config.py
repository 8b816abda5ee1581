"""Settings: declared once as data, resolved once, validated once.

Precedence, for every setting: a keyword argument to :func:`qm_otel.setup` wins, then the
setting's own ``QM_OTEL_*`` environment variable, then the standard ``OTEL_*`` variable(s)
it maps to, then the default. An empty string counts as unset.

>>> s = resolve_settings({"service_name": "checkout"}, environ={"OTEL_TRACES_EXPORTER": "none"})
>>> (s.service_name, s.traces_exporter, s.exporter_protocol)
('checkout', 'none', 'http/protobuf')
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PARAMS", "SETTING_NAMES", "ConfigError", "Param", "Settings", "resolve_settings"]


class ConfigError(ValueError):
    """A setting has a value qm-otel cannot use; the message names the setting, value and what is allowed."""


_EXPORTERS = ("otlp", "console", "none")
_METRIC_EXPORTERS = ("otlp", "prometheus", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc")
_LOG_FORMATS = ("auto", "json", "text", "pipe", "none")
_FILE_FORMATS = ("json", "pipe", "text")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "local"})

#: Resource attribute keys that may also supply a setting through ``OTEL_RESOURCE_ATTRIBUTES``.
_RESOURCE_KEYS = {
    "service_name": "service.name",
    "service_version": "service.version",
    "environment": "deployment.environment.name",
}


@dataclass(frozen=True)
class Param:
    """One setting: its name, where it is read from, its default and how a raw value is parsed."""

    name: str
    env: str
    otel_env: tuple[str, ...]
    default: Any
    parse: Callable[[str, Any], Any]
    allowed: str
    doc: str

    def error(self, value: object, source: str) -> ConfigError:
        """Build the error for a value this setting does not accept."""
        message = (
            f"qm-otel setting {self.name!r} (from {source}) got {value!r}; allowed: {self.allowed}"
        )
        return ConfigError(message)


def _choice(*choices: str, upper: bool = False) -> Callable[[str, Any], Any]:
    def parse(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(name)
        text = value.strip().upper() if upper else value.strip().lower()
        if text not in choices:
            raise ValueError(name)
        return text

    return parse


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise ValueError(name)
    return value.strip()


def _url(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(name)
    text = value.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(name)
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(name) from exc
    if parts.query or parts.fragment or any(c.isspace() for c in text):
        raise ValueError(name)
    return text


def _number(name: str, value: Any, convert: Callable[[Any], Any], accept: Callable[[Any], bool]) -> Any:
    """A number from text or a number; ``accept`` decides on the value (booleans are never numbers)."""
    if isinstance(value, bool):
        raise TypeError(name)
    number = convert(value.strip()) if isinstance(value, str) else value
    if not isinstance(number, int | float) or not accept(number):
        raise ValueError(name)
    return convert(number)


def _positive_int(name: str, value: Any) -> int:
    return int(_number(name, value, int, lambda n: isinstance(n, int) and n > 0))


def _port(name: str, value: Any) -> int:
    number = _positive_int(name, value)
    if number > 65535:
        raise ValueError(name)
    return number


def _positive_float(name: str, value: Any) -> float:
    return float(_number(name, value, float, lambda n: 0 < n < float("inf")))


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(name)


def _header_names(name: str, value: Any) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    names = tuple(item for item in items if item)
    if not names or not all(isinstance(n, str) and _HEADER_NAME.fullmatch(n) for n in names):
        raise ValueError(name)
    return names


def _ratio(name: str, value: Any) -> float:
    return float(_number(name, value, float, lambda n: 0.0 <= n <= 1.0))


def _components(name: str, value: Any) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    names = tuple(item for item in items if item)
    if not all(isinstance(n, str) and re.fullmatch(r"[A-Z][A-Z0-9_]{0,31}", n) for n in names):
        raise ValueError(name)
    return names


def _words(name: str, value: Any) -> tuple[str, ...]:
    items = [item.strip().lower() for item in value.split(",")] if isinstance(value, str) else list(value)
    words = tuple(item for item in items if item)
    if not all(isinstance(w, str) and re.fullmatch(r"[a-z0-9_.-]{1,64}", w) for w in words):
        raise ValueError(name)
    return words


def _path(name: str, value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | PurePath) else None
    if not text or "\x00" in text:
        raise ValueError(name)
    return text


def _route_path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9._~/-]{0,200}", value.strip()):
        raise ValueError(name)
    return value.strip()


def _regex_list(name: str, value: Any) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    patterns = tuple(item for item in items if item)
    for pattern in patterns:
        if not isinstance(pattern, str) or "," in pattern:
            raise ValueError(name)
        re.compile(pattern)
    return patterns


PARAMS: tuple[Param, ...] = (
    Param("service_name", "QM_OTEL_SERVICE_NAME", ("OTEL_SERVICE_NAME",), "unknown_service", _text,
          "non-empty text", "`service.name` of every signal (also read from OTEL_RESOURCE_ATTRIBUTES)."),
    Param("service_version", "QM_OTEL_SERVICE_VERSION", (), "0.0.0", _text,
          "non-empty text", "`service.version` (also read from OTEL_RESOURCE_ATTRIBUTES)."),
    Param("environment", "QM_OTEL_ENVIRONMENT", (), "development", _text, "non-empty text",
          "`deployment.environment.name`; also picks the default stdout log format."),
    Param("exporter_protocol", "QM_OTEL_EXPORTER_OTLP_PROTOCOL", ("OTEL_EXPORTER_OTLP_PROTOCOL",),
          "http/protobuf", _choice(*_PROTOCOLS), ", ".join(_PROTOCOLS), "OTLP transport."),
    Param("exporter_endpoint", "QM_OTEL_EXPORTER_OTLP_ENDPOINT", ("OTEL_EXPORTER_OTLP_ENDPOINT",),
          None, _url, "an http(s) URL with a host, no query",
          "Collector base URL; default http://localhost:4318 (http/protobuf) or :4317 (grpc)."),
    Param("traces_exporter", "QM_OTEL_TRACES_EXPORTER", ("OTEL_TRACES_EXPORTER",), "otlp",
          _choice(*_EXPORTERS), ", ".join(_EXPORTERS), "Where spans go."),
    Param("metrics_exporter", "QM_OTEL_METRICS_EXPORTER", ("OTEL_METRICS_EXPORTER",), "otlp",
          _choice(*_METRIC_EXPORTERS), ", ".join(_METRIC_EXPORTERS),
          "Where metrics go; `prometheus` serves them for scraping instead of pushing OTLP."),
    Param("prometheus_host", "QM_OTEL_PROMETHEUS_HOST", ("OTEL_EXPORTER_PROMETHEUS_HOST",), "localhost", _text,
          "a host name or address", "Address the Prometheus scrape endpoint binds (metrics_exporter=prometheus)."),
    Param("prometheus_port", "QM_OTEL_PROMETHEUS_PORT", ("OTEL_EXPORTER_PROMETHEUS_PORT",), 9464, _port,
          "a port number 1-65535", "Port of the Prometheus scrape endpoint (/metrics)."),
    Param("logs_exporter", "QM_OTEL_LOGS_EXPORTER", ("OTEL_LOGS_EXPORTER",), "otlp",
          _choice(*_EXPORTERS), ", ".join(_EXPORTERS), "Where log records go."),
    Param("metric_export_interval_ms", "QM_OTEL_METRIC_EXPORT_INTERVAL", ("OTEL_METRIC_EXPORT_INTERVAL",),
          60000, _positive_int, "a positive integer (milliseconds)", "Periodic metric export interval."),
    Param("log_format", "QM_OTEL_LOG_FORMAT", (), "auto", _choice(*_LOG_FORMATS), ", ".join(_LOG_FORMATS),
          "stdout log format; `auto` is text in development, JSON elsewhere; `none` adds no stdout handler."),
    Param("log_level", "QM_OTEL_LOG_LEVEL", (), "INFO", _choice(*_LOG_LEVELS, upper=True),
          ", ".join(_LOG_LEVELS), "Root logger level."),
    Param("excluded_urls", "QM_OTEL_EXCLUDED_URLS",
          ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"),
          None, _regex_list, "comma-separated regular expressions (no comma inside one)",
          "URLs (scheme://host/path) not traced nor request-logged; searched, so anchor them. "
          "Default: the health and readiness paths."),
    Param("shutdown_timeout_s", "QM_OTEL_SHUTDOWN_TIMEOUT", (), 5.0, _positive_float,
          "a positive number of seconds", "Upper bound on the flush at shutdown; the app never waits longer."),
    Param("correlation_headers", "QM_OTEL_CORRELATION_HEADERS", (), ("X-Correlation-ID", "X-Request-ID"),
          _header_names, "comma-separated HTTP header names",
          "Incoming correlation headers, in priority order; the first is also the response header."),
    Param("trust_incoming_ids", "QM_OTEL_TRUST_INCOMING_IDS", (), True, _bool, "true or false",
          "Trust incoming correlation IDs and trace context; false for public edges (new trace per request)."),
    Param("request_log", "QM_OTEL_REQUEST_LOG", (), True, _bool, "true or false",
          "One record per HTTP request (replaces uvicorn's access log); health endpoints skipped."),
    Param("sensitive_fields", "QM_OTEL_SENSITIVE_FIELDS", (),
          ("authorization", "cookie", "token", "password", "passwd", "secret", "api_key", "apikey", "session",
           "signature"),
          _words, "comma-separated lower-case words",
          "A header or query parameter whose name contains one of these is redacted from logs and spans."),
    Param("extra_components", "QM_OTEL_EXTRA_COMPONENTS", (), (), _components,
          "comma-separated upper-case names", "Components the application adds to the conventions' list."),
    Param("conventions_file", "QM_OTEL_CONVENTIONS_FILE", (), None, _path, "a path to a TOML file",
          "Overrides merged over the packaged conventions (bands, breaker defaults, alerts), validated."),
    Param("health_path", "QM_OTEL_HEALTH_PATH", (), "/healthz", _route_path, "a path starting with /",
          "Liveness endpoint added by instrument_app (not traced, not request-logged)."),
    Param("ready_path", "QM_OTEL_READY_PATH", (), "/readyz", _route_path, "a path starting with /",
          "Readiness endpoint: dependency checks, breakers, degraded flag; 503 when not ready."),
    Param("log_config", "QM_OTEL_LOG_CONFIG", (), None, _path, "a path to a logging dictConfig JSON file",
          "Configure logging from this file (also usable as uvicorn --log-config) instead of log_format."),
    Param("log_file", "QM_OTEL_LOG_FILE", (), None, _path, "a file path", "Also log to this file (opt-in)."),
    Param("log_file_format", "QM_OTEL_LOG_FILE_FORMAT", (), "json", _choice(*_FILE_FORMATS),
          ", ".join(_FILE_FORMATS), "Format of the log file."),
    Param("log_file_max_bytes", "QM_OTEL_LOG_FILE_MAX_BYTES", (), 100 * 1024 * 1024, _positive_int,
          "a positive integer (bytes)", "Size at which the log file is rotated."),
    Param("log_file_backups", "QM_OTEL_LOG_FILE_BACKUPS", (), 7, _positive_int, "a positive integer",
          "Rotated, gzip-compressed files kept."),
    Param("log_file_max_age_days", "QM_OTEL_LOG_FILE_MAX_AGE_DAYS", (), 7.0, _positive_float,
          "a positive number of days", "Rotated files older than this are removed."),
    Param("trace_sample_ratio", "QM_OTEL_TRACE_SAMPLE_RATIO", (), None, _ratio, "a number from 0 to 1",
          "Parent-based ratio sampling that keeps its ratio for UUID- and hash-derived trace IDs; also used "
          "for OTEL_TRACES_SAMPLER=(parentbased_)traceidratio with OTEL_TRACES_SAMPLER_ARG."),
)

_PARAMS_BY_NAME = {param.name: param for param in PARAMS}
#: the names ``setup()`` accepts as settings
SETTING_NAMES = frozenset(_PARAMS_BY_NAME)


@dataclass(frozen=True)
class Settings:
    """The resolved, validated settings: built once by :func:`resolve_settings`."""

    service_name: str
    service_version: str
    environment: str
    exporter_protocol: str
    exporter_endpoint: str
    traces_exporter: str
    metrics_exporter: str
    logs_exporter: str
    metric_export_interval_ms: int
    prometheus_host: str
    prometheus_port: int
    log_format: str
    log_level: str
    excluded_urls: tuple[str, ...]
    shutdown_timeout_s: float
    correlation_headers: tuple[str, ...]
    trust_incoming_ids: bool
    request_log: bool
    sensitive_fields: tuple[str, ...]
    extra_components: tuple[str, ...]
    conventions_file: str | None
    health_path: str
    ready_path: str
    log_config: str | None
    log_file: str | None
    log_file_format: str
    log_file_max_bytes: int
    log_file_backups: int
    log_file_max_age_days: float
    trace_sample_ratio: float | None
    #: whether the ratio sampler follows a sampled parent (False only for OTEL_TRACES_SAMPLER=traceidratio)
    sample_parent_based: bool = True
    #: names of the settings given explicitly (keyword argument or QM_OTEL_* variable)
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)

    @property
    def development(self) -> bool:
        """Whether ``environment`` names a development environment (text logs, strict event checks)."""
        return self.environment.lower() in _DEVELOPMENT_ENVIRONMENTS

    @property
    def stdout_format(self) -> str:
        """The stdout log format after resolving ``auto``."""
        if self.log_format != "auto":
            return self.log_format
        return "text" if self.development else "json"


def _resource_env(environ: Mapping[str, str]) -> dict[str, str]:
    raw = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() and value.strip():
            pairs[key.strip()] = value.strip()
    return pairs


def _raw_value(
    param: Param, kwargs: Mapping[str, Any], environ: Mapping[str, str], resource: Mapping[str, str]
) -> tuple[Any, str] | None:
    if kwargs.get(param.name) is not None:
        return kwargs[param.name], f"argument {param.name}="
    for var in (param.env, *param.otel_env):
        if environ.get(var, "").strip():
            return environ[var], var
    key = _RESOURCE_KEYS.get(param.name)
    if key and key in resource:
        return resource[key], f"OTEL_RESOURCE_ATTRIBUTES[{key}]"
    return None


_RATIO_SAMPLERS = {"traceidratio": False, "parentbased_traceidratio": True}


def _ratio_from_otel_sampler(environ: Mapping[str, str], values: dict[str, Any]) -> None:
    """Take over the SDK's ratio samplers, which mis-sample UUID-derived trace IDs."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler not in _RATIO_SAMPLERS:
        return
    raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
    try:
        values["trace_sample_ratio"] = _ratio("trace_sample_ratio", raw)
    except (TypeError, ValueError) as exc:
        raise _PARAMS_BY_NAME["trace_sample_ratio"].error(raw, "OTEL_TRACES_SAMPLER_ARG") from exc
    values["sample_parent_based"] = _RATIO_SAMPLERS[sampler]


def resolve_settings(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Resolve every setting with the documented precedence and validate it.

    Raises:
        ConfigError: naming the setting, where the value came from, the value and what is allowed.

    """
    unknown = sorted(set(kwargs) - set(_PARAMS_BY_NAME))
    if unknown:
        message = f"qm-otel got unknown setting(s) {unknown}; known: {sorted(_PARAMS_BY_NAME)}"
        raise ConfigError(message)
    resource = _resource_env(environ)
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for param in PARAMS:
        found = _raw_value(param, kwargs, environ, resource)
        if found is None:
            values[param.name] = param.default
            continue
        raw, source = found
        if source in (f"argument {param.name}=", param.env):
            explicit.add(param.name)
        try:
            values[param.name] = param.parse(param.name, raw)
        except (TypeError, ValueError, re.error) as exc:
            raise param.error(raw, source) from exc
    if values["trace_sample_ratio"] is None:
        _ratio_from_otel_sampler(environ, values)
    if "log_config" in explicit and "log_format" in explicit:
        message = (f"qm-otel settings 'log_config' and 'log_format' were both given ({values['log_config']!r}, "
                   f"{values['log_format']!r}); allowed: one of them (the file decides the format)")
        raise ConfigError(message)
    if values["excluded_urls"] is None:
        values["excluded_urls"] = tuple(
            rf"^https?://[^/]+{re.escape(values[path])}$" for path in ("health_path", "ready_path")
        )
    if values["exporter_endpoint"] is None:
        port = 4317 if values["exporter_protocol"] == "grpc" else 4318
        values["exporter_endpoint"] = f"http://localhost:{port}"
    return Settings(**values, explicit=frozenset(explicit))
