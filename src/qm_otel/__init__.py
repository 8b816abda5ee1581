"""qm-otel: an OpenTelemetry distribution for Python web services.

>>> import qm_otel
>>> qm_otel.setup(app=app)  # doctest: +SKIP

wires traces, metrics and logs, correlated, exported over OTLP.
"""

from qm_otel._version import __version__
from qm_otel.bootstrap import Telemetry, setup, shutdown
from qm_otel.breaker import CircuitBreaker, CircuitOpenError
from qm_otel.config import ConfigError, Settings
from qm_otel.conventions import classify
from qm_otel.correlation import correlation, correlation_id
from qm_otel.events import EventError, event, timed
from qm_otel.fastapi import instrument_app
from qm_otel.health import add_check, remove_check
from qm_otel.metrics import cache_hit, cache_miss

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
    "setup",
    "shutdown",
    "timed",
]
