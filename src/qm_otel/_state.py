"""The one global: the telemetry state of this process, set by ``setup()`` and cleared by ``shutdown()``.

Every module that needs the running configuration reads it here (or is handed it); nothing
reaches up to :mod:`qm_otel.bootstrap`. Compare structlog's ``_config.py``.

>>> get() is None            # before setup(), or after shutdown()
True

Tests that drive ``setup()`` in-process call :func:`qm_otel.testing.reset` (which shuts the
pipeline down and calls :func:`reset`) between cases.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: this module imports nothing of qm_otel at run time
    from qm_otel.bootstrap import Telemetry
    from qm_otel.config import Settings
    from qm_otel.conventions import Conventions
    from qm_otel.instruments import Instruments

__all__ = ["State", "get", "reset", "set_state", "with_telemetry"]


@dataclass(frozen=True)
class State:
    """What ``setup()`` resolved: settings, conventions, and (once built) the handle and instruments."""

    settings: Settings
    conventions: Conventions
    telemetry: Telemetry | None = None
    instruments: Instruments | None = None


_STATE: State | None = None


def get() -> State | None:
    """The active state, or None before ``setup()`` and after ``shutdown()``."""
    return _STATE


def set_state(state: State) -> None:
    """Make ``state`` the active one (``setup()`` only)."""
    global _STATE  # noqa: PLW0603 - this module is the one place global state lives
    _STATE = state


def with_telemetry(telemetry: Telemetry, instruments: Instruments) -> State:
    """Complete the active state with the built handle and instruments; return it."""
    if _STATE is None:
        message = "qm-otel: no settings to attach the telemetry handle to (setup() not in progress)"
        raise RuntimeError(message)
    state = dataclasses.replace(_STATE, telemetry=telemetry, instruments=instruments)
    set_state(state)
    return state


def reset() -> None:
    """Forget the active state: the next ``setup()`` builds a fresh pipeline."""
    global _STATE  # noqa: PLW0603
    _STATE = None
