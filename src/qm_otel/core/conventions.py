"""The conventions data (``conventions.toml``), loaded and validated once, and what it implies.

>>> conventions().level_for_status("DEGRADED")
'WARNING'
>>> classify("bootstrap", 250).band, classify("bootstrap", 249.9).band
('acceptable', 'optimal')
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qm_otel import _state

__all__ = [
    "CONVENTIONS",
    "AlertPolicy",
    "Band",
    "BreakerDefaults",
    "Classification",
    "Conventions",
    "ConventionsError",
    "Degradation",
    "Transition",
    "classify",
    "conventions",
    "load",
    "load_with_overrides",
]

PATH = Path(__file__).parent.parent / "conventions.toml"  # the package's data, beside its folders
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_BANDS = ("optimal", "acceptable", "warning", "error")


class ConventionsError(ValueError):
    """The conventions file is malformed; the message names the file and the offending key."""


@dataclass(frozen=True)
class Band:
    """The edges of one quantity's threshold bands."""

    quantity: str
    unit: str
    better: str  # "lower" or "higher"
    optimal: float
    acceptable: float
    warning: float

    def band_of(self, value: float) -> str:
        """optimal, acceptable, warning or error; the optimal edge belongs to acceptable."""
        if self.better == "lower":
            if value < self.optimal:
                return "optimal"
            if value <= self.acceptable:
                return "acceptable"
            return "warning" if value <= self.warning else "error"
        if value > self.optimal:
            return "optimal"
        if value >= self.acceptable:
            return "acceptable"
        return "warning" if value >= self.warning else "error"


@dataclass(frozen=True)
class Classification:
    """A value's band and the log level and status the band implies."""

    quantity: str
    value: float
    band: str
    level: str
    status: str


@dataclass(frozen=True)
class Transition:
    """One circuit-breaker transition as the conventions table logs it."""

    name: str
    source: str
    target: str
    level: str
    status: str
    message: str


@dataclass(frozen=True)
class BreakerDefaults:
    """Default numbers of a circuit breaker and its transitions, keyed by (from, to)."""

    failure_threshold: int
    window_s: float
    recovery_s: float
    transitions: dict[tuple[str, str], Transition]


@dataclass(frozen=True)
class Degradation:
    """When a cache's hit rate puts the service in degraded mode."""

    cache_hit_rate_below: float
    window: int
    min_lookups: int


@dataclass(frozen=True)
class AlertPolicy:
    """What the alert rules need beyond ``[alerts]``: the availability SLO, flapping, log rates, runbooks."""

    slo_availability_percent: float
    slo_period_days: float
    slow_request_percent_above: float
    breaker_flap_openings: int
    breaker_flap_window_minutes: int
    error_logs_per_minute_above: float
    slow_request_logs_above: float
    runbook_base_url: str
    #: stalls of the event loop per minute and service (5-minute rate) that raise QmOtelEventLoopBlocked
    event_loop_stalls_per_minute_above: float


@dataclass(frozen=True)
class Conventions:
    """Components, statuses, bands, alerts, degradation and breaker rules, validated."""

    components: tuple[str, ...]
    statuses: dict[str, str]
    band_outcomes: dict[str, tuple[str, str]]
    bands: dict[str, Band]
    slow_request_ms: float
    alerts: dict[str, float]
    degradation: Degradation
    breaker: BreakerDefaults
    alert_policy: AlertPolicy
    #: the share (percent) of traces with no error and no slow request the collector gateway keeps
    tail_keep_percent: float

    def level_for_status(self, status: str) -> str:
        """The log level a record with ``status`` is written at."""
        return self.statuses[status]

    def classify(self, quantity: str, value: float) -> Classification:
        """Classify ``value`` against the band of ``quantity``."""
        band = self.bands[quantity].band_of(value)
        level, status = self.band_outcomes[band]
        return Classification(quantity, value, band, level, status)


#: the running conventions, with their overrides (set by ``setup()``, emptied by ``shutdown()``)
CONVENTIONS: _state.Slot[Conventions] = _state.Slot("conventions")


_STATES = ("CLOSED", "OPEN", "HALF_OPEN")
_NUMBER = (int, float)


#: the keys each table may hold ("*": any name, its table checked by the pattern under "*")
_SCHEMA: dict[str, Any] = {
    "components": None,
    "statuses": "*",
    "band_outcomes": {band: {"level": None, "status": None} for band in _BANDS},
    "bands": {"*": {"unit": None, "better": None, "optimal_below": None, "acceptable_max": None, "warning_max": None,
                    "optimal_above": None, "acceptable_min": None, "warning_min": None}},
    "requests": {"slow_ms": None},
    "tail_sampling": {"keep_percent": None},
    "alerts": {"error_rate_percent_above": None, "cache_hit_rate_percent_below": None, "memory_mb_above": None,
               "response_time_ms_above": None},
    "degradation": {"cache_hit_rate_below": None, "window": None, "min_lookups": None},
    "alert_policy": {"slo_availability_percent": None, "slo_period_days": None, "slow_request_percent_above": None,
                     "breaker_flap_openings": None, "breaker_flap_window_minutes": None,
                     "error_logs_per_minute_above": None, "slow_request_logs_above": None, "runbook_base_url": None,
                     "event_loop_stalls_per_minute_above": None},
    "breaker": {"failure_threshold": None, "window_s": None, "recovery_s": None,
                "transitions": {"*": {"from": None, "to": None, "level": None, "status": None, "message": None}}},
}


def _toml_kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if int in kinds or float in kinds:
        return "a number"
    names: dict[type, str] = {str: "a string", list: "an array", dict: "a table"}
    return names.get(kinds[0], kinds[0].__name__)


def _toml_value(value: Any) -> str:
    """A value as the file shows it (TOML), not as Python prints it."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, int | float):
        return f"the number {value:g}"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return f"a table ({', '.join(sorted(value)) or 'empty'})"
    return type(value).__name__


class _Reader:
    """Reads keys out of parsed conventions data; every error names the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, text: str) -> ConventionsError:
        return ConventionsError(f"{self.source}: {text}")

    def need(self, table: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(table, dict) or key not in table:
            raise self.fail(f"missing key {where}{key}; expected {_toml_kind(kind)}")
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.fail(f"key {where}{key} has {_toml_value(value)}; expected {_toml_kind(kind)}")
        return value

    def positive(self, table: Any, key: str, where: str) -> float:
        value = float(self.need(table, key, where, _NUMBER))
        if value <= 0:
            raise self.fail(f"key {where}{key} has {_toml_value(value)}; expected a positive number")
        return value

    def known_keys(self, table: Any, schema: Any, where: str = "") -> None:
        """Refuse a key the schema does not know, suggesting the closest known one."""
        if not isinstance(table, dict) or not isinstance(schema, dict):
            return
        for key, value in table.items():
            if key in schema:
                self.known_keys(value, schema[key], f"{where}{key}.")
            elif "*" in schema:
                self.known_keys(value, schema["*"], f"{where}{key}.")
            else:
                import difflib  # only for this message

                close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
                hint = f"; did you mean {where}{close[0]}?" if close else ""
                raise self.fail(f"unknown key {where}{key}{hint} (known here: {', '.join(sorted(schema))})")


def _band(read: _Reader, name: str, table: Any) -> Band:
    where = f"bands.{name}."
    better = read.need(table, "better", where, str)
    if better not in ("lower", "higher"):
        raise read.fail(f"key {where}better has {_toml_value(better)}; expected \"lower\" or \"higher\"")
    names = ("optimal_below", "acceptable_max", "warning_max") if better == "lower" else (
        "optimal_above", "acceptable_min", "warning_min")
    edges = [float(read.need(table, key, where, _NUMBER)) for key in names]
    ordered = edges == sorted(edges) if better == "lower" else edges == sorted(edges, reverse=True)
    if not ordered:
        raise read.fail(f"keys {where}{{{', '.join(names)}}} are out of order: {edges}")
    return Band(name, read.need(table, "unit", where, str), better, *edges)


def _breaker(read: _Reader, table: Any, statuses: dict[str, str]) -> BreakerDefaults:
    transitions: dict[tuple[str, str], Transition] = {}
    for name, row in read.need(table, "transitions", "breaker.", dict).items():
        where = f"breaker.transitions.{name}."
        source, target = read.need(row, "from", where, str), read.need(row, "to", where, str)
        level, status = read.need(row, "level", where, str), read.need(row, "status", where, str)
        if source not in _STATES or target not in _STATES:
            raise read.fail(f"key {where}from/to has {_toml_value(source)}/{_toml_value(target)}; expected one of "
                            f"{', '.join(_STATES)}")
        if level not in _LEVELS or status not in statuses:
            raise read.fail(f"key {where}level/status has {_toml_value(level)}/{_toml_value(status)}; expected a "
                            f"level ({', '.join(_LEVELS)}) and a status ({', '.join(statuses)})")
        transitions[(source, target)] = Transition(name, source, target, level, status,
                                                   read.need(row, "message", where, str))
    threshold = read.positive(table, "failure_threshold", "breaker.")
    if threshold != int(threshold):
        raise read.fail(f"key breaker.failure_threshold has {_toml_value(threshold)}; expected a positive integer")
    return BreakerDefaults(int(threshold), read.positive(table, "window_s", "breaker."),
                           read.positive(table, "recovery_s", "breaker."), transitions)


def _alert_policy(read: _Reader, table: Any) -> AlertPolicy:
    where = "alert_policy."
    slo = read.positive(table, "slo_availability_percent", where)
    if slo >= 100:
        raise read.fail(f"key {where}slo_availability_percent has {_toml_value(slo)}; expected a number below 100 "
                        "(a 100 % target leaves no error budget)")
    counts = {}
    for key in ("breaker_flap_openings", "breaker_flap_window_minutes"):
        value = read.positive(table, key, where)
        if value != int(value):
            raise read.fail(f"key {where}{key} has {_toml_value(value)}; expected a positive integer")
        counts[key] = int(value)
    return AlertPolicy(
        slo, read.positive(table, "slo_period_days", where), read.positive(table, "slow_request_percent_above", where),
        counts["breaker_flap_openings"], counts["breaker_flap_window_minutes"],
        read.positive(table, "error_logs_per_minute_above", where),
        read.positive(table, "slow_request_logs_above", where),
        read.need(table, "runbook_base_url", where, str),
        read.positive(table, "event_loop_stalls_per_minute_above", where),
    )


def load(data: dict[str, Any], source: str = PATH.name) -> Conventions:
    """Validate parsed conventions data; raises ConventionsError naming ``source`` and the offending key."""
    read = _Reader(source)
    read.known_keys(data, _SCHEMA)
    components = read.need(data, "components", "", list)
    if not components or not all(isinstance(c, str) and c.isupper() for c in components):
        raise read.fail(f"key components has {_toml_value(components)}; expected an array of upper-case names")
    statuses = read.need(data, "statuses", "", dict)
    for status, level in statuses.items():
        if level not in _LEVELS:
            raise read.fail(f"key statuses.{status} has {_toml_value(level)}; expected one of {', '.join(_LEVELS)}")
    outcomes_table = read.need(data, "band_outcomes", "", dict)
    outcomes: dict[str, tuple[str, str]] = {}
    for band in _BANDS:
        outcome = read.need(outcomes_table, band, "band_outcomes.", dict)
        level = read.need(outcome, "level", f"band_outcomes.{band}.", str)
        status = read.need(outcome, "status", f"band_outcomes.{band}.", str)
        if level not in _LEVELS or status not in statuses:
            raise read.fail(f"key band_outcomes.{band} has level {_toml_value(level)} and status "
                            f"{_toml_value(status)}; expected a level ({', '.join(_LEVELS)}) and a status "
                            f"({', '.join(statuses)})")
        outcomes[band] = (level, status)
    bands = {name: _band(read, name, table) for name, table in read.need(data, "bands", "", dict).items()}
    slow = read.positive(read.need(data, "requests", "", dict), "slow_ms", "requests.")
    alerts_table = read.need(data, "alerts", "", dict)
    alerts = {key: read.positive(alerts_table, key, "alerts.") for key in alerts_table}
    degradation_table = read.need(data, "degradation", "", dict)
    degradation = Degradation(
        read.positive(degradation_table, "cache_hit_rate_below", "degradation."),
        int(read.positive(degradation_table, "window", "degradation.")),
        int(read.positive(degradation_table, "min_lookups", "degradation.")),
    )
    breaker = _breaker(read, read.need(data, "breaker", "", dict), statuses)
    policy = _alert_policy(read, read.need(data, "alert_policy", "", dict))
    keep = float(read.need(read.need(data, "tail_sampling", "", dict), "keep_percent", "tail_sampling.", _NUMBER))
    if not 0 <= keep <= 100:
        raise read.fail(f"key tail_sampling.keep_percent has {_toml_value(keep)}; expected a number from 0 to 100")
    return Conventions(tuple(components), dict(statuses), outcomes, bands, slow, alerts, degradation, breaker, policy,
                       keep)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else (
            value)
    return merged


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConventionsError(f"{path}: cannot be read as TOML ({exc})") from exc


@functools.cache
def load_with_overrides(override: str | None) -> Conventions:
    """The packaged conventions, with an application's override file merged on top (validated as a whole)."""
    data = _read(PATH)
    if override is None:
        return load(data)
    return load(_merge(data, _read(Path(override))), source=f"{override} (over {PATH.name})")


def conventions() -> Conventions:
    """The conventions in force: those ``setup()`` loaded, or the packaged ones before it."""
    running = CONVENTIONS.get()
    return running if running is not None else load_with_overrides(None)


def classify(quantity: str, value: float) -> Classification:
    """Classify ``value`` of ``quantity`` (bootstrap, response_time, cache_hit_rate, memory).

    Raises:
        KeyError: for a quantity the conventions have no band for.

    """
    return conventions().classify(quantity, value)
