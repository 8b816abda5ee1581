"""qm-otel: an OpenTelemetry distribution for Python web services.

>>> import qm_otel
>>> qm_otel.setup(app=app)  # doctest: +SKIP

wires traces, metrics and logs, correlated, exported over OTLP. This module is the public API
and nothing else; ``instrument_app`` is imported on first use, so ``import qm_otel`` does not
import FastAPI, Starlette or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qm_otel._version import __version__
from qm_otel.core.config import ConfigError, Settings
from qm_otel.core.conventions import classify
from qm_otel.core.correlation import correlation, correlation_id
from qm_otel.launch.bootstrap import Telemetry, setup, shutdown
from qm_otel.runtime.breaker import CircuitBreaker, CircuitOpenError
from qm_otel.runtime.degraded_mode import cache_hit, cache_miss
from qm_otel.runtime.events import EventError, event, timed
from qm_otel.runtime.health import add_check, remove_check
from qm_otel.runtime.users import set_user

if TYPE_CHECKING:
    from qm_otel.integrations.fastapi import instrument_app

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "EventError",
    "Settings",
    "Telemetry",
    "__version__",
    "add_check",
    "cache_hit",
    "cache_miss",
    "classify",
    "correlation",
    "correlation_id",
    "event",
    "instrument_app",
    "remove_check",
    "set_user",
    "setup",
    "shutdown",
    "timed",
]

#: public names whose modules are imported on first use: name → module
_LAZY = {"instrument_app": "qm_otel.integrations.fastapi"}


def __getattr__(name: str) -> Any:
    """Import a lazy public name's module when the name is first used (compare logfire's integrations)."""
    module_name = _LAZY.get(name)
    if module_name is None:
        message = f"module 'qm_otel' has no attribute {name!r}"
        raise AttributeError(message)
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
