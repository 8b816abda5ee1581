"""qm-otel: an OpenTelemetry distribution for Python web services.

>>> import qm_otel
>>> qm_otel.setup(app=app)  # doctest: +SKIP

wires traces, metrics and logs, correlated, exported over OTLP.
"""

from qm_otel._version import __version__
from qm_otel.bootstrap import Telemetry, setup, shutdown
from qm_otel.config import ConfigError, Settings
from qm_otel.correlation import correlation, correlation_id
from qm_otel.events import EventError, event, timed
from qm_otel.fastapi import instrument_app

__all__ = [
    "ConfigError",
    "EventError",
    "Settings",
    "Telemetry",
    "__version__",
    "correlation",
    "correlation_id",
    "event",
    "instrument_app",
    "setup",
    "shutdown",
    "timed",
]
