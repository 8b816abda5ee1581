"""Settings: declared once as data, resolved once, validated once.

Precedence, for every setting: a keyword argument to :func:`qm_otel.setup` wins, then the
setting's own ``QM_OTEL_*`` environment variable, then the standard ``OTEL_*`` variable(s)
it maps to, then the default. An empty string counts as unset.

>>> s = resolve_settings({"service_name": "checkout"}, environ={"OTEL_TRACES_EXPORTER": "none"})
>>> (s.service_name, s.traces_exporter, s.exporter_protocol)
('checkout', (), 'http/protobuf')
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from qm_otel import _state
from qm_otel.core import otel_environment

__all__ = ["PARAMS", "SETTINGS", "SETTING_NAMES", "ConfigError", "Param", "Settings", "resolve_settings"]


class ConfigError(ValueError):
    """A setting has a value qm-otel cannot use; the message names the setting, value and what is allowed."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        #: the setting's name, when one setting is at fault
        self.setting = setting


_EXPORTERS = ("otlp", "console")
_METRIC_EXPORTERS = ("otlp", "prometheus", "console")
_EXPORTERS_ALLOWED = "`none`, or a comma-separated list of `otlp`, `console` and registered exporters"
_PROTOCOLS = ("http/protobuf", "grpc")
_LOG_FORMATS = ("auto", "json", "text", "pipe", "none")
_FILE_FORMATS = ("json", "pipe", "text")
_ON_CONFIG_ERROR = ("disable", "exit")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "local"})

@dataclass(frozen=True)
class Param:
    """One setting as the table declares it: where it is read from, its default, how it is parsed.

    Built from the metadata of a :class:`Settings` field; the resolver, the generated ``setup()``
    keywords (:mod:`qm_otel.core.setup_options`) and the README's settings table all come from it.
    """

    name: str
    #: the setting's own ``QM_OTEL_*`` variable
    env: str
    #: standard ``OTEL_*`` variables it also reads, in order
    otel_env: tuple[str, ...]
    #: a key of ``OTEL_RESOURCE_ATTRIBUTES`` it also reads, if any
    resource_key: str | None
    default: Any
    parse: Callable[[str, Any], Any]
    allowed: str
    doc: str
    #: the type ``setup()`` accepts for it (Python source), when wider than the resolved type
    accepts: str
    #: the default as the README shows it, when ``default`` is computed later (None)
    default_doc: str | None
    #: whether ``setup()`` takes it as a keyword (False: a setting of the ``opentelemetry-instrument`` path,
    #: read from its environment variable only)
    keyword: bool = True

    def error(self, value: object, source: str, allowed: str | None = None) -> ConfigError:
        """Build the error for a value this setting does not accept (``allowed``: what this machine allows)."""
        message = (
            f"qm-otel setting {self.name!r} (from {source}) got {value!r}; allowed: {allowed or self.allowed}"
        )
        return ConfigError(message, setting=self.name)


_PARAM_KEY = "qm_otel.param"


def setting(
    default: Any,
    env: str,
    parse: Callable[[str, Any], Any],
    allowed: str,
    doc: str,
    *,
    otel: tuple[str, ...] = (),
    resource_key: str | None = None,
    accepts: str | None = None,
    default_doc: str | None = None,
    keyword: bool = True,
) -> Any:
    """One row of the settings table: a :class:`Settings` field carrying its :class:`Param` pieces."""
    row = {"env": env, "otel_env": otel, "resource_key": resource_key, "default": default, "parse": parse,
           "allowed": allowed, "doc": doc, "accepts": accepts, "default_doc": default_doc, "keyword": keyword}
    return dataclasses.field(default=default, metadata={_PARAM_KEY: row})


def _choice(*choices: str, upper: bool = False) -> Callable[[str, Any], Any]:
    def parse(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(name)
        text = value.strip().upper() if upper else value.strip().lower()
        if text not in choices:
            raise ValueError(name)
        return text

    return parse


class _NotAllowed(ValueError):
    """A value outside what is installed here; ``allowed`` says what is."""

    def __init__(self, name: str, allowed: str) -> None:
        super().__init__(name)
        self.allowed = allowed


#: the SDK's entry-point group of each signal's exporters (what other packages register)
EXPORTER_GROUPS = {"traces": "opentelemetry_traces_exporter", "metrics": "opentelemetry_metrics_exporter",
                   "logs": "opentelemetry_logs_exporter"}


def registered_exporters(signal_name: str) -> list[str]:
    """The exporter names installed packages register for ``signal_name`` (the SDK's entry points)."""
    from importlib.metadata import entry_points

    return sorted({entry.name for entry in entry_points(group=EXPORTER_GROUPS[signal_name])})


def _exporters(signal_name: str, builtin: tuple[str, ...]) -> Callable[[str, Any], Any]:
    """A comma-separated list of exporters (the OTel specification's form); ``none`` alone for none."""

    def parse(name: str, value: Any) -> tuple[str, ...]:
        items = [item.strip().lower() for item in value.split(",")] if isinstance(value, str) else list(value)
        names = tuple(dict.fromkeys(item for item in items if item))  # in order, once each
        if not all(isinstance(n, str) for n in names):
            raise TypeError(name)
        if names in ((), ("none",)):
            return ()
        if "none" in names:
            raise _NotAllowed(name, "`none` alone, or a list of exporters without it")
        unknown = [n for n in names if n not in builtin and n not in registered_exporters(signal_name)]
        if unknown:
            choices = sorted({*builtin, *registered_exporters(signal_name)})
            raise _NotAllowed(name, f"a comma-separated list of {', '.join(choices)}, or none "
                                    f"(installed here; {unknown[0]!r} is not)")
        return names

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


def _switch_interval(name: str, value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("off", "none"):
        return None
    return float(_number(name, value, float, lambda n: 0.05 <= n <= 100))


def _block_threshold(name: str, value: Any) -> float:
    return float(_number(name, value, float, lambda n: 10 <= n <= 60_000))


def _regex_list(name: str, value: Any) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    patterns = tuple(item for item in items if item)
    for pattern in patterns:
        if not isinstance(pattern, str) or "," in pattern:
            raise ValueError(name)
        re.compile(pattern)
    return patterns


@dataclass(frozen=True)
class Settings:
    """The settings table, declared once, and the resolved values :func:`resolve_settings` builds.

    Each field is one setting: its default, its ``QM_OTEL_*`` variable, its parser, what it allows
    and one line of documentation. ``setup()``'s typed keywords (:mod:`qm_otel.core.setup_options`) and the
    README's settings table are generated from these rows by ``qm-otel render``.
    """

    service_name: str = setting(
        "unknown_service", "QM_OTEL_SERVICE_NAME", _text, "non-empty text",
        "`service.name` on every signal", otel=("OTEL_SERVICE_NAME",), resource_key="service.name")
    service_version: str = setting(
        "0.0.0", "QM_OTEL_SERVICE_VERSION", _text, "non-empty text", "`service.version`",
        resource_key="service.version")
    environment: str = setting(
        "development", "QM_OTEL_ENVIRONMENT", _text, "non-empty text",
        "`deployment.environment.name`; picks the default log format", resource_key="deployment.environment.name")
    exporter_protocol: str = setting(
        "http/protobuf", "QM_OTEL_EXPORTER_OTLP_PROTOCOL", _choice(*_PROTOCOLS), ", ".join(_PROTOCOLS),
        "OTLP transport; `grpc` needs the `qm-otel[grpc]` extra", otel=("OTEL_EXPORTER_OTLP_PROTOCOL",))
    exporter_endpoint: str = setting(
        None, "QM_OTEL_EXPORTER_OTLP_ENDPOINT", _url, "an http(s) URL with a host, no query",
        "collector base URL; `/v1/traces` etc. are appended for HTTP. A per-signal "
        "`OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` wins over `OTEL_EXPORTER_OTLP_ENDPOINT` (not over an explicit "
        "qm-otel endpoint)", otel=("OTEL_EXPORTER_OTLP_ENDPOINT",), accepts="str",
        default_doc="`http://localhost:4318` (`:4317` for grpc)")
    traces_exporter: tuple[str, ...] = setting(
        ("otlp",), "QM_OTEL_TRACES_EXPORTER", _exporters("traces", _EXPORTERS), _EXPORTERS_ALLOWED,
        "where spans go: one or several, comma-separated (`otlp,console`); also any exporter another package "
        "registers under `opentelemetry_traces_exporter`", otel=("OTEL_TRACES_EXPORTER",),
        accepts="Sequence[str] | str", default_doc="`otlp`")
    metrics_exporter: tuple[str, ...] = setting(
        ("otlp",), "QM_OTEL_METRICS_EXPORTER", _exporters("metrics", _METRIC_EXPORTERS),
        _EXPORTERS_ALLOWED.replace("`otlp`, `console`", "`otlp`, `prometheus`, `console`"),
        "where metrics go (a list, as for traces); `prometheus` serves `/metrics` for scraping (one process "
        "per port: not with `--workers`)", otel=("OTEL_METRICS_EXPORTER",), accepts="Sequence[str] | str",
        default_doc="`otlp`")
    prometheus_host: str = setting(
        "localhost", "QM_OTEL_PROMETHEUS_HOST", _text, "a host name or address",
        "where the scrape endpoint binds (`0.0.0.0` in a container)", otel=("OTEL_EXPORTER_PROMETHEUS_HOST",))
    prometheus_port: int = setting(
        9464, "QM_OTEL_PROMETHEUS_PORT", _port, "a port number 1-65535", "scrape endpoint port (the first of "
        "`prometheus_ports`)", otel=("OTEL_EXPORTER_PROMETHEUS_PORT",))
    prometheus_ports: int = setting(
        1, "QM_OTEL_PROMETHEUS_PORTS", _positive_int, "a positive integer",
        "how many ports from `prometheus_port` on a process may try: with several workers (uvicorn `--workers`, "
        "gunicorn) each serves `/metrics` on the first free one; list them all as scrape targets")
    logs_exporter: tuple[str, ...] = setting(
        ("otlp",), "QM_OTEL_LOGS_EXPORTER", _exporters("logs", _EXPORTERS), _EXPORTERS_ALLOWED,
        "where log records go (a list, as for traces)", otel=("OTEL_LOGS_EXPORTER",),
        accepts="Sequence[str] | str", default_doc="`otlp`")
    metric_export_interval_ms: int = setting(
        60000, "QM_OTEL_METRIC_EXPORT_INTERVAL", _positive_int, "a positive integer (milliseconds)",
        "periodic metric export", otel=("OTEL_METRIC_EXPORT_INTERVAL",))
    export_buffer_items: int = setting(
        50_000, "QM_OTEL_EXPORT_BUFFER_ITEMS", _positive_int, "a positive integer",
        "per signal: spans, log records or metric points kept for sending while the collector is slow or down "
        "(retried with backoff; beyond this, dropped and counted in `qm_otel.telemetry.dropped`)")
    export_buffer_mb: float = setting(
        16.0, "QM_OTEL_EXPORT_BUFFER_MB", _positive_float, "a positive number of MiB",
        "per signal: the same buffer's limit in encoded bytes (whichever limit is reached first)")
    switch_interval_ms: float | None = setting(
        0.5, "QM_OTEL_SWITCH_INTERVAL_MS", _switch_interval, "milliseconds from 0.05 to 100, or `off`",
        "the interpreter's thread switch interval while exporters run (`sys.setswitchinterval`; Python's "
        "default is 5 ms): a busy request thread then lets the export threads in every 0.5 ms, so their "
        "queues drain instead of overflowing and an export batch stalls a request for less; an interval the "
        "application set itself is kept unless this is set explicitly; restored at shutdown; `off` leaves "
        "it alone", accepts="float | str")
    log_format: str = setting(
        "auto", "QM_OTEL_LOG_FORMAT", _choice(*_LOG_FORMATS), ", ".join(_LOG_FORMATS),
        "stdout format; `auto` = `text` in development (`development`, `dev`, `local`), `json` elsewhere; "
        "`none` = no stdout handler")
    log_config: str | None = setting(
        None, "QM_OTEL_LOG_CONFIG", _path, "a path to a logging dictConfig JSON file",
        "configure logging from this file instead of `log_format` (the same file works as `uvicorn "
        "--log-config`); `qm_otel/logs/logging.json` is a ready one", accepts="str | os.PathLike[str]",
        default_doc="unset")
    log_file: str | None = setting(
        None, "QM_OTEL_LOG_FILE", _path, "a file path",
        "also log to this file: size-rotated, rotated files gzip-compressed in the background",
        accepts="str | os.PathLike[str]", default_doc="unset (no file)")
    log_file_format: str = setting(
        "json", "QM_OTEL_LOG_FILE_FORMAT", _choice(*_FILE_FORMATS), ", ".join(_FILE_FORMATS),
        "format of the log file")
    log_file_max_bytes: int = setting(
        100 * 1024 * 1024, "QM_OTEL_LOG_FILE_MAX_BYTES", _positive_int, "a positive integer (bytes)",
        "rotate at this size (100 MB)")
    log_file_backups: int = setting(
        7, "QM_OTEL_LOG_FILE_BACKUPS", _positive_int, "a positive integer", "rotated `.gz` files kept")
    log_file_max_age_days: float = setting(
        7.0, "QM_OTEL_LOG_FILE_MAX_AGE_DAYS", _positive_float, "a positive number of days",
        "rotated files older than this are removed")
    log_code_location: bool = setting(
        True, "QM_OTEL_LOG_CODE_LOCATION", _bool, "true or false",
        "JSON lines carry `module`, `function` and `line` of the log call, OTLP records the `code.file.path`, "
        "`code.function.name` and `code.line.number` attributes (the pipe format keeps its six columns)",
        otel=("OTEL_PYTHON_LOG_CODE_ATTRIBUTES",))
    request_log: bool = setting(
        True, "QM_OTEL_REQUEST_LOG", _bool, "true or false",
        "one record per HTTP request (method, route template, status, duration, client); replaces uvicorn's "
        "access log; WARNING above 2 s")
    sensitive_fields: tuple[str, ...] = setting(
        ("authorization", "cookie", "token", "password", "passwd", "secret", "api_key", "apikey", "session",
         "signature"),
        "QM_OTEL_SENSITIVE_FIELDS", _words, "comma-separated lower-case words",
        "a header or query parameter whose name contains one of them is redacted (`REDACTED`) in span "
        "attributes and logged URLs; headers and query strings never reach the request log",
        accepts="Sequence[str] | str")
    extra_components: tuple[str, ...] = setting(
        (), "QM_OTEL_EXTRA_COMPONENTS", _components, "comma-separated upper-case names",
        "the application's own event components, beside the conventions'", accepts="Sequence[str] | str",
        default_doc="none")
    log_level: str = setting(
        "INFO", "QM_OTEL_LOG_LEVEL", _choice(*_LOG_LEVELS, upper=True), ", ".join(_LOG_LEVELS),
        "root logger level")
    excluded_urls: tuple[str, ...] = setting(
        None, "QM_OTEL_EXCLUDED_URLS", _regex_list, "comma-separated regular expressions (no comma inside one)",
        "URLs (`scheme://host/path`) neither traced nor request-logged; they are *searched*, so anchor them",
        otel=("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"), accepts="Sequence[str] | str",
        default_doc="the health and readiness paths, anchored: `^https?://[^/]+/healthz$,^https?://[^/]+/readyz$`")
    health_path: str = setting(
        "/healthz", "QM_OTEL_HEALTH_PATH", _route_path, "a path starting with /",
        "liveness endpoint served by `instrument_app` (not traced, not request-logged)")
    ready_path: str = setting(
        "/readyz", "QM_OTEL_READY_PATH", _route_path, "a path starting with /",
        "readiness endpoint: checks, breakers, degraded flag; 503 when not ready")
    conventions_file: str | None = setting(
        None, "QM_OTEL_CONVENTIONS_FILE", _path, "a path to a TOML file",
        "overrides merged over the packaged `conventions.toml` (bands, breaker defaults, alerts, degradation), "
        "validated as a whole; a bad file fails `setup()` naming the file and key",
        accepts="str | os.PathLike[str]", default_doc="unset")
    on_config_error: str = setting(
        "disable", "QM_OTEL_ON_CONFIG_ERROR", _choice(*_ON_CONFIG_ERROR), ", ".join(_ON_CONFIG_ERROR),
        "under `opentelemetry-instrument`, what a bad setting does: `disable` prints one line (the setting, "
        "the value, what is allowed) and the service runs without telemetry; `exit` prints it and stops the "
        "process with status 2 (for deployments that fail fast). The variable only: `setup()` does not take it "
        "as a keyword, and `setup()` called in code raises `ConfigError`", keyword=False)
    shutdown_timeout_s: float = setting(
        5.0, "QM_OTEL_SHUTDOWN_TIMEOUT", _positive_float, "a positive number of seconds",
        "upper bound on the flush at shutdown; the app never waits longer")
    correlation_headers: tuple[str, ...] = setting(
        ("X-Correlation-ID", "X-Request-ID"), "QM_OTEL_CORRELATION_HEADERS", _header_names,
        "comma-separated HTTP header names",
        "incoming correlation headers in priority order; the first is the response header",
        accepts="Sequence[str] | str")
    trust_incoming_ids: bool = setting(
        True, "QM_OTEL_TRUST_INCOMING_IDS", _bool, "true or false",
        "`false` on public edges: every request starts a new trace, incoming `traceparent`/`tracestate`/"
        "`baggage` are dropped, an incoming ID is only the `correlation.incoming_id` attribute")
    trace_sample_ratio: float | None = setting(
        None, "QM_OTEL_TRACE_SAMPLE_RATIO", _ratio, "a number from 0 to 1",
        "ratio sampling that keeps its ratio for UUID- and hash-derived trace IDs (parent-based); also used "
        "for `OTEL_TRACES_SAMPLER=(parentbased_)traceidratio` with `OTEL_TRACES_SAMPLER_ARG`",
        default_doc="unset: the SDK's `OTEL_TRACES_SAMPLER`")
    runtime_metrics: bool = setting(
        True, "QM_OTEL_RUNTIME_METRICS", _bool, "true or false",
        "process and CPython metrics of every worker process (`process.cpu.time`, `process.memory.usage`, "
        "`process.thread.count`, `process.open_file_descriptor.count`, `cpython.gc.*`, ...) through the contrib "
        "system-metrics instrumentation; `false` keeps only `process.memory.usage` (the memory band)")
    event_loop_watchdog: bool = setting(
        True, "QM_OTEL_EVENT_LOOP_WATCHDOG", _bool, "true or false",
        "for ASGI apps: the `qm_otel.event_loop.lag` histogram, the `qm_otel.event_loop.blocked` counter and one "
        "WARNING record (with the blocking code's stack and the blocked request's trace) per stall of the event "
        "loop longer than `event_loop_block_ms`")
    event_loop_block_ms: float | None = setting(
        None, "QM_OTEL_EVENT_LOOP_BLOCK_MS", _block_threshold, "milliseconds from 10 to 60000",
        "a loop that has not turned for this long is blocked (the watchdog's threshold)", accepts="float | str",
        default_doc="the response-time band's error edge in the conventions (`[bands.response_time].warning_max`, "
                    "200 ms)")
    #: whether the ratio sampler follows a sampled parent (False only for OTEL_TRACES_SAMPLER=traceidratio)
    sample_parent_based: bool = True
    #: names of the settings given explicitly (keyword argument or QM_OTEL_* variable)
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)
    #: one line per ``OTEL_*`` variable that has no effect under qm-otel, for ``setup()`` to log once as a WARNING
    environment_warnings: tuple[str, ...] = dataclasses.field(default=(), compare=False)

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


#: the running settings (set by ``setup()``, emptied by ``shutdown()``)
SETTINGS: _state.Slot[Settings] = _state.Slot("settings")


def _params() -> tuple[Param, ...]:
    rows = []
    for row in dataclasses.fields(Settings):
        pieces = row.metadata.get(_PARAM_KEY)
        if pieces is not None:
            accepts = pieces["accepts"] or str(row.type).replace(" | None", "")
            rows.append(Param(name=row.name, **{**pieces, "accepts": accepts}))
    return tuple(rows)


#: the settings table, one :class:`Param` per setting, in the order of :class:`Settings`
PARAMS: tuple[Param, ...] = _params()
_PARAMS_BY_NAME = {param.name: param for param in PARAMS}
#: the names ``setup()`` accepts as settings (keywords)
SETTING_NAMES = frozenset(param.name for param in PARAMS if param.keyword)


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
    key = param.resource_key
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
        message = f"qm-otel got unknown setting(s) {unknown}; known: {sorted(SETTING_NAMES)}"
        raise ConfigError(message)
    for name in sorted(set(kwargs) - SETTING_NAMES):
        param = _PARAMS_BY_NAME[name]
        message = (f"qm-otel setting {name!r} is not a setup() argument (got {kwargs[name]!r}); allowed: the "
                   f"variable {param.env}, read under opentelemetry-instrument (setup() called in code raises "
                   "ConfigError for a bad setting: catch it to carry on without telemetry)")
        raise ConfigError(message, setting=name)
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
            raise param.error(raw, source, getattr(exc, "allowed", None)) from exc
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
    warnings = _check_otel_environment(environ, values, explicit)
    return Settings(**values, explicit=frozenset(explicit), environment_warnings=warnings)


_OTLP_NAMES = {"otlp": None, "otlp_proto_http": "http/protobuf", "otlp_proto_grpc": "grpc"}


def otlp_protocols(values: Mapping[str, Any], environ: Mapping[str, str], explicit: frozenset[str] | set[str]
                   ) -> dict[str, str]:
    """The OTLP protocol of each signal whose exporters include an OTLP one (per-signal variables honoured)."""
    protocols = {}
    for signal_name in otel_environment.SIGNALS:
        names = [name for name in values[f"{signal_name}_exporter"] if name in _OTLP_NAMES]
        if names:
            protocols[signal_name] = _OTLP_NAMES[names[0]] or otel_environment.signal_protocol(
                environ, signal_name, values["exporter_protocol"], explicit="exporter_protocol" in explicit)
    return protocols


def _check_otel_environment(environ: Mapping[str, str], values: Mapping[str, Any], explicit: set[str]
                            ) -> tuple[str, ...]:
    """Refuse an SDK variable qm-otel cannot use as it is set; the warnings for those that have no effect here.

    docs/otel-environment.md lists every variable and which it is.
    """
    protocols = otlp_protocols(values, environ, explicit)
    endpoints = {signal_name: (environ.get(f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT", "").strip()
                               if "exporter_endpoint" not in explicit else "") or values["exporter_endpoint"]
                 for signal_name in protocols}
    found = otel_environment.problems(environ, protocols, values["traces_exporter"], endpoints)
    for problem in found:
        if not problem.warned:
            message = (f"qm-otel: environment variable {problem.variable} got {problem.value!r}; "
                       f"allowed: {problem.allowed}")
            raise ConfigError(message, setting=problem.variable)
    return tuple(f"qm-otel: environment variable {problem.variable}={problem.value!r} has no effect here: "
                 f"{problem.allowed}; the service runs with it ignored" for problem in found)  # all warned by now
