"""The SDK's own ``OTEL_*`` variables: each one qm-otel honours is checked; one it does not act on is named.

The OpenTelemetry SDK reads its variables where it builds things, and a value it cannot use is
logged and replaced by the default (``OTEL_BSP_MAX_QUEUE_SIZE=abc``, ``OTEL_EXPORTER_OTLP_COMPRESSION=zstd``)
or ends in an exception far from the setting (a negative attribute limit). qm-otel's rule:

- **refused**: a value qm-otel would use and cannot honour (a bad queue size, an unknown provider, a TLS
  file that does not exist), or a combination that would lose or leak data (a declarative configuration
  file qm-otel would not follow, ``INSECURE=false`` where the URL sends in clear), fails ``setup()``
  naming the variable, the value and what is allowed;
- **warned**: a variable that is inert or redundant under qm-otel (``OTEL_BSP_EXPORT_TIMEOUT``, which
  the Python SDK never reads; a Zipkin variable without a Zipkin exporter; ``*_INSECURE`` over HTTP)
  is named once in a WARNING saying what qm-otel does instead, and the service runs with full telemetry.

:func:`problems` returns what ``environ`` holds of either kind; :mod:`qm_otel.core.config` turns the first
refusal into a :class:`~qm_otel.core.config.ConfigError` and keeps the warnings for ``setup()`` to log.
Variables mapped to a qm-otel setting (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` …) are
checked by the settings table itself. docs/otel-environment.md lists every variable and what happens to it.

>>> problems({"OTEL_BSP_MAX_QUEUE_SIZE": "abc"}, {"traces": "http/protobuf"}, (), {})
[Problem(variable='OTEL_BSP_MAX_QUEUE_SIZE', value='abc', allowed='a positive integer (spans)', warned=False)]
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["SIGNALS", "Problem", "problems", "signal_protocol"]

SIGNALS = ("traces", "metrics", "logs")
_PROTOCOLS = ("http/protobuf", "grpc")
_COMPRESSIONS = ("gzip", "deflate", "none")
_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")


@dataclass(frozen=True)
class Problem:
    """A variable qm-otel cannot use as it is set: its name, its value, and what is allowed or done instead."""

    variable: str
    value: str
    #: refused: what is allowed; warned: why it has no effect here and what qm-otel does instead
    allowed: str
    #: True: inert or redundant under qm-otel (one WARNING, the service runs); False: ``setup()`` refuses it
    warned: bool = False


def signal_protocol(environ: Mapping[str, str], signal_name: str, general: str, *, explicit: bool) -> str:
    """The OTLP protocol of one signal: ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` wins over the general one.

    An explicit qm-otel ``exporter_protocol`` (argument or ``QM_OTEL_EXPORTER_OTLP_PROTOCOL``) wins over both.
    """
    per_signal = environ.get(f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_PROTOCOL", "").strip().lower()
    return general if explicit or not per_signal else per_signal


class _Context(NamedTuple):  # a NamedTuple: a frozen dataclass costs the import about 1 ms more
    environ: Mapping[str, str]
    #: the OTLP protocol of each signal that exports with ``otlp`` (absent: that signal does not)
    protocols: Mapping[str, str]
    traces_exporter: Sequence[str]
    #: the URL each signal in ``protocols`` sends to
    endpoints: Mapping[str, str]

    def uses(self, protocol: str, signal_name: str | None = None) -> bool:
        if signal_name is not None:
            return self.protocols.get(signal_name, protocol) == protocol
        return not self.protocols or protocol in self.protocols.values()


class _Inert(str):
    """What a check returns for a variable that has no effect here: why, and what qm-otel does instead."""

    __slots__ = ()


#: a check returns None when the value is fine, an :class:`_Inert` text when it is warned about, else what is allowed
_Check = Callable[[str, _Context], str | None]


def _entry_points(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return sorted({entry.name for entry in entry_points(group=group)})


def _refused(why: str) -> _Check:
    return lambda _value, _ctx: f"unset: {why}"


def _inert(why: str) -> _Check:
    return lambda _value, _ctx: _Inert(why)


def _choice(*choices: str, why: str = "") -> _Check:
    def check(value: str, _ctx: _Context) -> str | None:
        if value.strip().lower() in choices:
            return None
        return f"{', '.join(choices)}{f' ({why})' if why else ''}"

    return check


def _inert_unless(quiet_value: str, why: str) -> _Check:
    """A variable that has no effect here except as ``quiet_value`` (what qm-otel does anyway): warned otherwise."""

    def check(value: str, _ctx: _Context) -> str | None:
        return None if value.strip().lower() == quiet_value else _Inert(why)

    return check


def _integer(minimum: int, what: str, *, unset_word: bool = False) -> _Check:
    def check(value: str, _ctx: _Context) -> str | None:
        text = value.strip().lower()
        if unset_word and text == "unset":
            return None
        if text.lstrip("+").isdigit() and int(text) >= minimum:
            return None
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        return f"{kind} ({what}){', or unset (no limit)' if unset_word else ''}"

    return check


def _seconds(value: str, _ctx: _Context) -> str | None:
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    return None if 0 < number < math.inf else "a positive number of seconds (the installed SDK reads seconds)"


def _url(value: str, _ctx: _Context) -> str | None:
    parts = urlsplit(value.strip())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme in ("http", "https") and parts.hostname and port_ok and not parts.query:
        return None
    return "an http(s) URL with a host, no query (used as it is: include the /v1/<signal> path for HTTP)"


def _headers(value: str, _ctx: _Context) -> str | None:
    """Each comma-separated member must be one header by the SDK's own parser (``name=value``, URL-encoded)."""
    from opentelemetry.util.re import parse_env_headers

    sdk_logger = logging.getLogger("opentelemetry.util.re")  # its warning would repeat what the error says
    quiet = sdk_logger.disabled
    sdk_logger.disabled = True
    try:
        for member in value.split(","):
            if member.strip() and len(parse_env_headers(member, liberal=True)) != 1:
                return f"comma-separated name=value pairs, URL-encoded; {member.strip()!r} is not one"
    finally:
        sdk_logger.disabled = quiet
    return None


def _file(value: str, _ctx: _Context) -> str | None:
    return None if os.path.isfile(value.strip()) and os.access(value.strip(), os.R_OK) else "a readable file"


def _registered(group: str, *extra: str) -> _Check:
    def check(value: str, _ctx: _Context) -> str | None:
        names = [name.strip() for name in value.split(",") if name.strip()]
        known = {*extra, *_entry_points(group)}
        unknown = [name for name in names if name not in known]
        if names and not unknown:
            return None
        return f"a comma-separated list of {', '.join(sorted(known))} (installed here, entry point group {group})"

    return check


def _one_registered(group: str) -> _Check:
    def check(value: str, _ctx: _Context) -> str | None:
        known = _entry_points(group)
        if value.strip() in known:
            return None
        return f"one of {', '.join(known) or 'nothing'} (registered here under the entry point group {group})"

    return check


def _for_protocol(protocol: str, signal_name: str | None, then: _Check) -> _Check:
    """A variable only the ``protocol`` exporter reads: inert (warned) while the signal(s) use the other one."""

    def check(value: str, ctx: _Context) -> str | None:
        if not ctx.uses(protocol, signal_name):
            other = "grpc" if protocol != "grpc" else "http/protobuf"
            whose = f"the {signal_name} exporter uses {other}" if signal_name else f"no OTLP exporter uses {protocol}"
            return _Inert(f"only the {protocol} exporter reads it, and {whose}")
        return then(value, ctx)

    return check


def _insecure(signal_name: str | None) -> _Check:
    """The gRPC plaintext switch: honoured with gRPC, inert over HTTP (the URL's scheme decides) unless it leaks.

    ``false`` asks for transport security: over HTTP to an ``http://`` URL the data would go in clear
    text, so that is refused; everything else over HTTP only says what the scheme already decides.
    """
    honoured = _for_protocol("grpc", signal_name, _choice("true", "false"))

    def check(value: str, ctx: _Context) -> str | None:
        if value.strip().lower() == "false":
            for name in (signal_name,) if signal_name else SIGNALS:
                url = ctx.endpoints.get(name, "")
                if ctx.protocols.get(name) == "http/protobuf" and urlsplit(url).scheme == "http":
                    return (f"true or unset, or an https:// endpoint: the {name} exporter uses http/protobuf, where "
                            f"the URL's scheme decides, and {url} would send in clear text")
        found = honoured(value, ctx)
        if isinstance(found, _Inert):
            return _Inert(f"{found}; over HTTP the endpoint's scheme decides (https:// is TLS, http:// is not)")
        return found

    return check


def _compression(signal_name: str | None) -> _Check:
    """gzip, deflate or none over HTTP; the gRPC exporter knows gzip only (it raises on the others)."""

    def check(value: str, ctx: _Context) -> str | None:
        grpc = ctx.uses("grpc", signal_name) if signal_name else "grpc" in ctx.protocols.values()
        choices = ("gzip",) if grpc else _COMPRESSIONS
        if value.strip().lower() in choices:
            return None
        return ", ".join(choices) + (" (the gRPC exporter knows gzip only, raising on others)" if grpc else "")

    return check


def _grpc_codes(value: str, _ctx: _Context) -> str | None:
    from grpc import StatusCode  # type: ignore[import-untyped]

    names = [name.strip().upper() for name in value.split(",") if name.strip()]
    if names and all(name in StatusCode.__members__ for name in names):
        return None
    return f"a comma-separated list of gRPC status codes ({', '.join(StatusCode.__members__)})"


def _sampler_arg(_value: str, ctx: _Context) -> str | None:
    sampler = ctx.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in ("", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off"):
        return _Inert(f"OTEL_TRACES_SAMPLER is {sampler or 'unset (parentbased_always_on)'}, which takes no "
                      "argument, so sampling follows it, as in the SDK (the ratio samplers traceidratio and "
                      "parentbased_traceidratio, and registered samplers, read the argument)")
    return None  # the ratio samplers' argument is checked by the setting trace_sample_ratio


def _id_generator(value: str, _ctx: _Context) -> str | None:
    name = value.strip().lower()
    if name == "qm_otel":
        return None
    if name == "random":
        return _Inert("qm-otel's ID generator (qm_otel) is the random one, except that a request's root span takes "
                      "the trace ID its correlation ID maps to")
    return ("qm_otel (qm-otel derives trace IDs from correlation IDs with its own ID generator; random is "
            "accepted with a warning)")


def _zipkin(_value: str, ctx: _Context) -> str | None:
    if any("zipkin" in name for name in ctx.traces_exporter):
        return None
    exporters = ", ".join(ctx.traces_exporter) or "none"
    return _Inert(f"no zipkin exporter is in traces_exporter (only the Zipkin exporter reads it, when installed "
                  f"and listed); spans go to {exporters}")


def _resource_attributes(value: str, _ctx: _Context) -> str | None:
    for item in value.split(","):
        key, sep, _ = item.partition("=")
        if item.strip() and (not sep or not key.strip()):
            return f"comma-separated key=value pairs (values URL-encoded); {item.strip()!r} is not one"
    return None


_NOT_BUILT = "qm-otel builds and sets the global providers itself"
_NO_EXPORT_TIMEOUT = ("the Python SDK's batch processor never reads it, and in qm-otel an export only buffers "
                      "the batch; each POST is bounded by OTEL_EXPORTER_OTLP_[{signal}_]TIMEOUT (10 s unless set)")


def _otlp_checks() -> dict[str, _Check]:
    checks: dict[str, _Check] = {}
    for signal_name in (None, *SIGNALS):
        infix = f"{signal_name.upper()}_" if signal_name else ""
        prefix = f"OTEL_EXPORTER_OTLP_{infix}"
        if signal_name:  # the general endpoint and protocol are settings
            checks[f"{prefix}ENDPOINT"] = _url
            checks[f"{prefix}PROTOCOL"] = _choice(*_PROTOCOLS)
        checks[f"{prefix}HEADERS"] = _headers
        checks[f"{prefix}TIMEOUT"] = _seconds
        checks[f"{prefix}COMPRESSION"] = _compression(signal_name)
        checks[f"{prefix}CERTIFICATE"] = _file
        checks[f"{prefix}CLIENT_KEY"] = _file
        checks[f"{prefix}CLIENT_CERTIFICATE"] = _file
        checks[f"{prefix}INSECURE"] = _insecure(signal_name)
        for protocol, kind in (("http/protobuf", "HTTP"), ("grpc", "GRPC")):
            checks[f"OTEL_PYTHON_EXPORTER_OTLP_{kind}_{infix}CREDENTIAL_PROVIDER"] = _for_protocol(
                protocol, signal_name, _one_registered("opentelemetry_otlp_credential_provider"))
    return checks


#: every SDK variable qm-otel checks here (the ones mapped to settings are checked by the settings table)
_CHECKS: dict[str, _Check] = {
    "OTEL_SDK_DISABLED": _choice("true", "false"),
    "OTEL_CONFIG_FILE": _refused("qm-otel builds the pipeline from its settings and OTEL_* variables, not from a "
                                 "declarative configuration file"),
    "OTEL_RESOURCE_ATTRIBUTES": _resource_attributes,
    "OTEL_LOG_LEVEL": _choice(*_LEVELS, why="the level of the `opentelemetry` loggers"),
    "OTEL_TRACES_SAMPLER": _one_registered("opentelemetry_traces_sampler"),
    "OTEL_TRACES_SAMPLER_ARG": _sampler_arg,
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": _registered("opentelemetry_resource_detector", "*"),
    "OTEL_PROPAGATORS": _registered("opentelemetry_propagator", "none"),
    "OTEL_PYTHON_CONTEXT": _one_registered("opentelemetry_context"),
    "OTEL_PYTHON_ID_GENERATOR": _id_generator,
    "OTEL_PYTHON_TRACER_PROVIDER": _choice("sdk_tracer_provider", why=_NOT_BUILT),
    "OTEL_PYTHON_METER_PROVIDER": _choice("sdk_meter_provider", why=_NOT_BUILT),
    "OTEL_PYTHON_LOGGER_PROVIDER": _choice("sdk_logger_provider", why=_NOT_BUILT),
    "OTEL_PYTHON_TRACER_CONFIGURATOR": _refused(f"{_NOT_BUILT}, without the SDK's experimental configurators"),
    "OTEL_PYTHON_METER_CONFIGURATOR": _refused(f"{_NOT_BUILT}, without the SDK's experimental configurators"),
    "OTEL_PYTHON_LOGGER_CONFIGURATOR": _refused(f"{_NOT_BUILT}, without the SDK's experimental configurators"),
    # OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED is not checked: whatever its value, qm-otel installs its own
    # OTLP log handler, the only one (the SDK's configurator, which reads it, does not run under qm-otel, and
    # the logging instrumentor, which skips its handler for `true`, is not loaded: libraries.WIRED_BY_SETUP)
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": _inert_unless(
        "false", "qm-otel sends with its own delivery, past the SDK exporters' export, so their otel.sdk.* "
                 "metrics would stay empty; qm_otel.telemetry.dropped and qm_otel.telemetry.retried count what "
                 "they would"),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": _for_protocol("grpc", None, _grpc_codes),
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": _zipkin,
    "OTEL_EXPORTER_ZIPKIN_TIMEOUT": _zipkin,
    **_otlp_checks(),
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": _choice("cumulative", "delta", "lowmemory"),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": _choice(
        "explicit_bucket_histogram", "base2_exponential_bucket_histogram"),
    "OTEL_BSP_SCHEDULE_DELAY": _integer(1, "milliseconds"),
    "OTEL_BSP_EXPORT_TIMEOUT": _inert(_NO_EXPORT_TIMEOUT.format(signal="TRACES")),
    "OTEL_BSP_MAX_QUEUE_SIZE": _integer(1, "spans"),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": _integer(1, "spans, at most OTEL_BSP_MAX_QUEUE_SIZE"),
    "OTEL_BLRP_SCHEDULE_DELAY": _integer(1, "milliseconds"),
    "OTEL_BLRP_EXPORT_TIMEOUT": _inert(_NO_EXPORT_TIMEOUT.format(signal="LOGS")),
    "OTEL_BLRP_MAX_QUEUE_SIZE": _integer(1, "log records"),
    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": _integer(1, "log records, at most OTEL_BLRP_MAX_QUEUE_SIZE"),
    "OTEL_METRIC_EXPORT_TIMEOUT": _integer(1, "milliseconds"),
    "OTEL_METRICS_EXEMPLAR_FILTER": _choice("trace_based", "always_on", "always_off"),
    **{name: _integer(0, "attributes, events or links", unset_word=True) for name in (
        "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
        "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT")},
    **{name: _integer(0, "characters", unset_word=True) for name in (
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT")},
}

#: the variables this module checks (the others the SDK documents are settings of the settings table)
CHECKED = frozenset(_CHECKS)


#: qm-otel's batch processors queue this many spans or log records unless ``OTEL_BSP_MAX_QUEUE_SIZE`` /
#: ``OTEL_BLRP_MAX_QUEUE_SIZE`` say otherwise (the SDK's default is 2048): at full speed a request thread
#: hands items over faster than the export thread encodes them for a while (2048 dropped 925 of 10,400
#: spans in the in-process benchmark; 8192 dropped none)
QUEUE_DEFAULT = 8192


def queue_size(prefix: str, environ: Mapping[str, str] = os.environ) -> int | None:
    """The queue size to hand a batch processor (``prefix``: ``OTEL_BSP`` or ``OTEL_BLRP``).

    None when ``<prefix>_MAX_QUEUE_SIZE`` is set (the SDK reads it), else :data:`QUEUE_DEFAULT`.
    """
    return None if environ.get(f"{prefix}_MAX_QUEUE_SIZE", "").strip() else QUEUE_DEFAULT


def _batch_sizes(environ: Mapping[str, str]) -> Problem | None:
    """The SDK raises at construction when a batch is larger than the queue: say so with the variable."""
    for prefix, queue_default, batch_default in (("OTEL_BSP", QUEUE_DEFAULT, 512), ("OTEL_BLRP", QUEUE_DEFAULT, 512)):
        queue = int(environ.get(f"{prefix}_MAX_QUEUE_SIZE", "").strip() or queue_default)
        raw = environ.get(f"{prefix}_MAX_EXPORT_BATCH_SIZE", "").strip()
        if int(raw or batch_default) > queue:
            variable = f"{prefix}_MAX_EXPORT_BATCH_SIZE" if raw else f"{prefix}_MAX_QUEUE_SIZE"
            value = raw or environ[f"{prefix}_MAX_QUEUE_SIZE"]
            return Problem(variable, value, f"a batch size no larger than the queue size ({queue} here, "
                                            f"{prefix}_MAX_QUEUE_SIZE; the batch size defaults to {batch_default})")
    return None


def _client_keys(ctx: _Context) -> Problem | None:
    """A client key without a client certificate is dropped by the HTTP exporter: refuse it instead."""
    for signal_name in SIGNALS:
        infix = f"{signal_name.upper()}_"
        key_var = next((f"OTEL_EXPORTER_OTLP_{i}CLIENT_KEY" for i in (infix, "")
                        if ctx.environ.get(f"OTEL_EXPORTER_OTLP_{i}CLIENT_KEY", "").strip()), None)
        has_cert = any(ctx.environ.get(f"OTEL_EXPORTER_OTLP_{i}CLIENT_CERTIFICATE", "").strip() for i in (infix, ""))
        if key_var and not has_cert:
            return Problem(key_var, ctx.environ[key_var], f"a client key together with OTEL_EXPORTER_OTLP_[{infix}]"
                                                          "CLIENT_CERTIFICATE (a key alone is not used)")
    return None


def problems(environ: Mapping[str, str], protocols: Mapping[str, str], traces_exporter: Sequence[str],
             endpoints: Mapping[str, str]) -> list[Problem]:
    """The SDK variables in ``environ`` qm-otel cannot use as they are set: refused ones and warned ones, in order.

    Args:
        environ: the process environment.
        protocols: the OTLP protocol of each signal that exports with ``otlp``.
        traces_exporter: the span exporters chosen (a Zipkin one reads the Zipkin variables).
        endpoints: the URL each signal of ``protocols`` sends to.

    """
    ctx = _Context(environ, protocols, traces_exporter, endpoints)
    found: list[Problem] = []
    for variable, check in _CHECKS.items():
        value = environ.get(variable, "")
        if not value.strip():
            continue
        allowed = check(value, ctx)
        if allowed is not None:
            found.append(Problem(variable, value, str(allowed), warned=isinstance(allowed, _Inert)))
    if all(problem.warned for problem in found):  # the combinations read values checked above
        found.extend(problem for problem in (_batch_sizes(environ), _client_keys(ctx)) if problem is not None)
    return found
