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

__all__ = ["Band", "Classification", "Conventions", "ConventionsError", "classify", "conventions", "load"]

PATH = Path(__file__).with_name("conventions.toml")
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
class Conventions:
    """Components, statuses, bands and request rules, validated."""

    components: tuple[str, ...]
    statuses: dict[str, str]
    band_outcomes: dict[str, tuple[str, str]]
    bands: dict[str, Band]
    slow_request_ms: float

    def level_for_status(self, status: str) -> str:
        """The log level a record with ``status`` is written at."""
        return self.statuses[status]

    def classify(self, quantity: str, value: float) -> Classification:
        """Classify ``value`` against the band of ``quantity``."""
        band = self.bands[quantity].band_of(value)
        level, status = self.band_outcomes[band]
        return Classification(quantity, value, band, level, status)


def _need(table: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(table, dict) or key not in table:
        message = f"{PATH.name}: missing key {where}{key}"
        raise ConventionsError(message)
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        message = f"{PATH.name}: key {where}{key} has {value!r}; expected {getattr(kind, '__name__', kind)}"
        raise ConventionsError(message)
    return value


def _band(name: str, table: Any) -> Band:
    where = f"bands.{name}."
    better = _need(table, "better", where, str)
    names = ("optimal_below", "acceptable_max", "warning_max") if better == "lower" else (
        "optimal_above", "acceptable_min", "warning_min")
    if better not in ("lower", "higher"):
        message = f"{PATH.name}: key {where}better has {better!r}; expected 'lower' or 'higher'"
        raise ConventionsError(message)
    edges = [float(_need(table, key, where, (int, float))) for key in names]
    ordered = edges == sorted(edges) if better == "lower" else edges == sorted(edges, reverse=True)
    if not ordered:
        message = f"{PATH.name}: keys {where}{{{', '.join(names)}}} are out of order: {edges}"
        raise ConventionsError(message)
    return Band(name, _need(table, "unit", where, str), better, *edges)


def load(data: dict[str, Any]) -> Conventions:
    """Validate parsed conventions data; raises ConventionsError naming the offending key."""
    components = _need(data, "components", "", list)
    if not components or not all(isinstance(c, str) and c.isupper() for c in components):
        message = f"{PATH.name}: key components must list upper-case names, got {components!r}"
        raise ConventionsError(message)
    statuses = _need(data, "statuses", "", dict)
    for status, level in statuses.items():
        if level not in _LEVELS:
            message = f"{PATH.name}: key statuses.{status} has {level!r}; expected one of {_LEVELS}"
            raise ConventionsError(message)
    outcomes_table = _need(data, "band_outcomes", "", dict)
    outcomes: dict[str, tuple[str, str]] = {}
    for band in _BANDS:
        outcome = _need(outcomes_table, band, "band_outcomes.", dict)
        level = _need(outcome, "level", f"band_outcomes.{band}.", str)
        status = _need(outcome, "status", f"band_outcomes.{band}.", str)
        if level not in _LEVELS or status not in statuses:
            message = f"{PATH.name}: key band_outcomes.{band} has an unknown level or status: {outcome!r}"
            raise ConventionsError(message)
        outcomes[band] = (level, status)
    bands = {name: _band(name, table) for name, table in _need(data, "bands", "", dict).items()}
    slow = float(_need(_need(data, "requests", "", dict), "slow_ms", "requests.", (int, float)))
    return Conventions(tuple(components), dict(statuses), outcomes, bands, slow)


@functools.cache
def conventions() -> Conventions:
    """The packaged conventions, read and validated on first use."""
    with PATH.open("rb") as file:
        return load(tomllib.load(file))


def classify(quantity: str, value: float) -> Classification:
    """Classify ``value`` of ``quantity`` (bootstrap, response_time, cache_hit_rate, memory)."""
    return conventions().classify(quantity, value)
