"""The state room: the running pipeline's values, each in a slot; ``shutdown()`` empties them all.

The module that owns a value's type declares its slot, typed with it::

    SETTINGS: Slot[Settings] = _state.Slot("settings")          # core/config.py

``setup()`` fills the slots (the settings and conventions first, then the pipeline and its
instruments) and :func:`reset` empties every slot at once, so the next ``setup()`` builds a fresh
pipeline. Every module that needs the running configuration reads a slot (or is handed the value);
nothing reaches up to :mod:`qm_otel.launch.bootstrap`. This module imports nothing of qm_otel, not
even for types: a slot is typed by the module that declares it, and the pipeline handle, whose
class sits above every reader, is read through the :class:`Pipeline` protocol below. Compare
structlog's ``_config.py`` (one room for the global configuration).

>>> PIPELINE.get() is None            # before setup(), or after shutdown()
True

Tests that drive ``setup()`` in-process call :func:`qm_otel.testing.reset` (which shuts the
pipeline down, and so calls :func:`reset`) between cases.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:  # the SDK's types (a library below qm-otel, not a room of it)
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["PIPELINE", "Pipeline", "Slot", "first_time", "reset"]

T = TypeVar("T")


class Slot(Generic[T]):
    """One value of the running pipeline: set by ``setup()``, None before it and after ``shutdown()``."""

    __slots__ = ("_value", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: T | None = None
        _SLOTS.append(self)

    def __repr__(self) -> str:
        return f"Slot({self.name!r}, {'set' if self._value is not None else 'empty'})"

    def get(self) -> T | None:
        """The value, or None before ``setup()`` and after ``shutdown()``."""
        return self._value

    def set(self, value: T) -> None:
        """Make ``value`` the running one (``setup()`` only)."""
        self._value = value

    def clear(self) -> None:
        """Forget the value."""
        self._value = None


class Pipeline(Protocol):
    """What the rooms below ``launch`` use of the running pipeline (``bootstrap.Telemetry`` is one)."""

    @property
    def tracer_provider(self) -> TracerProvider: ...

    @property
    def meter_provider(self) -> MeterProvider: ...

    def force_flush(self, timeout_s: float | None = None, *, final: bool = False) -> bool:
        """Export everything buffered, within ``timeout_s``; ``final``: the process is stopping."""
        ...

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush and close the pipeline; it empties the state room."""
        ...


#: every slot declared, in declaration order (:func:`reset` empties them)
_SLOTS: list[Slot[Any]] = []

#: the running pipeline (set by ``setup()`` once its providers are built)
PIPELINE: Slot[Pipeline] = Slot("pipeline")


#: what :func:`first_time` has seen since the last :func:`reset` (the running pipeline's warn-once keys)
_SEEN: set[str] = set()
_SEEN_LOCK = threading.Lock()


def first_time(key: str) -> bool:
    """True the first time ``key`` is asked about while this pipeline runs: one WARNING per cause, not per call.

    The one warn-once register (a misnamed endpoint, an ``OTEL_*`` variable with no effect): a
    later ``setup()`` after ``shutdown()`` warns again, as its pipeline is a new one.
    """
    with _SEEN_LOCK:
        if key in _SEEN:
            return False
        _SEEN.add(key)
        return True


def reset() -> None:
    """Empty every slot and the warn-once register: the next ``setup()`` builds a fresh pipeline."""
    for slot in _SLOTS:
        slot.clear()
    with _SEEN_LOCK:
        _SEEN.clear()
