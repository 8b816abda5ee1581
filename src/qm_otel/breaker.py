"""CircuitBreaker: the conventions' breaker, with telemetry, for threads and asyncio alike.

>>> inventory = CircuitBreaker("inventory")                       # doctest: +SKIP
>>> @inventory
... async def fetch_stock(sku: str) -> int: ...
>>> with inventory:                                               # doctest: +SKIP
...     call_inventory()

- CLOSED → OPEN after ``failure_threshold`` failures within ``window_s`` seconds (a sliding window:
  successes in between do not reset it);
- OPEN rejects every call at once with :class:`CircuitOpenError`, the dependency is not called;
- after ``recovery_s`` exactly one trial call goes through (HALF_OPEN; concurrent callers are
  rejected, not queued); its success closes the breaker, its failure opens it again.

Each transition is logged as the conventions table says (level, message, status), added as an
event on the current span and counted; the state, the calls by outcome and the transitions are
metrics. The lock is held only to read or change the state, never while the dependency runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from opentelemetry import metrics, trace

from qm_otel import instruments
from qm_otel.contextwrap import SyncAsyncContext
from qm_otel.conventions import conventions
from qm_otel.events import event

__all__ = ["CircuitBreaker", "CircuitOpenError", "breakers", "state_observations"]

CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
STATES = (CLOSED, OPEN, HALF_OPEN)
_logger = logging.getLogger("qm_otel.breaker")
_REGISTRY: weakref.WeakValueDictionary[str, CircuitBreaker] = weakref.WeakValueDictionary()


class CircuitOpenError(RuntimeError):
    """The breaker is open (or testing with another call): the dependency was not called."""

    def __init__(self, name: str, state: str) -> None:
        super().__init__(f"circuit breaker {name!r} is {state}: call rejected")
        self.breaker = name
        self.state = state


def breakers() -> list[CircuitBreaker]:
    """Every live breaker, for the readiness report."""
    return sorted(_REGISTRY.values(), key=lambda b: b.name)


def _caller() -> tuple[int, int]:
    """Who is calling: the thread, and the asyncio task if there is one."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), id(task) if task is not None else 0


def state_observations(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    """``qm_otel.breaker.state``: per live breaker, 1 for its state and 0 for the other two."""
    del options
    return [
        metrics.Observation(1 if breaker.state == state else 0, {"breaker": breaker.name, "state": state})
        for breaker in breakers() for state in STATES
    ]


class CircuitBreaker(SyncAsyncContext):
    """A circuit breaker named ``name``; usable as a decorator and a context manager, sync and async.

    Args:
        name: the breaker's name in logs, metrics and the readiness report.
        failure_threshold: failures within ``window_s`` that open it (conventions default 3).
        window_s: the sliding window, seconds (default 10).
        recovery_s: how long it stays open before a trial call (default 30).
        failure_exceptions: which exceptions count as failures (others pass through, uncounted).
        required: whether the readiness endpoint reports 503 while it is open.
        clock: a monotonic clock in seconds (tests inject one).
        component: the execution-log component of its records.

    """

    def __init__(
        self,
        name: str,
        failure_threshold: int | None = None,
        window_s: float | None = None,
        recovery_s: float | None = None,
        *,
        failure_exceptions: tuple[type[BaseException], ...] = (Exception,),
        required: bool = False,
        clock: Callable[[], float] = time.monotonic,
        component: str = "SYSTEM",
    ) -> None:
        defaults = conventions().breaker
        self.name = name
        self.failure_threshold = failure_threshold or defaults.failure_threshold
        self.window_s = window_s if window_s is not None else defaults.window_s
        self.recovery_s = recovery_s if recovery_s is not None else defaults.recovery_s
        if self.failure_threshold < 1 or self.window_s <= 0 or self.recovery_s < 0:
            message = (f"CircuitBreaker {name!r}: failure_threshold must be >= 1, window_s > 0 and "
                       f"recovery_s >= 0; got {self.failure_threshold}, {self.window_s}, {self.recovery_s}")
            raise ValueError(message)
        self.failure_exceptions = failure_exceptions
        self.required = required
        self.component = component
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._trial: tuple[int, int] | None = None
        self._transitions = defaults.transitions
        _REGISTRY[name] = self

    @property
    def state(self) -> str:
        """CLOSED, OPEN or HALF_OPEN (OPEN until a call arrives after the recovery time)."""
        return self._state

    # --- the state machine: every method below runs with self._lock held ------------------------

    def _move(self, target: str) -> tuple[str, str]:
        source, self._state = self._state, target
        return source, target

    def _admit(self) -> tuple[bool, tuple[str, str] | None]:
        """Whether the caller may call the dependency, and the transition this caused."""
        if self._state == CLOSED:
            return True, None
        if self._state == OPEN and self._clock() - self._opened_at >= self.recovery_s:
            self._trial = _caller()
            return True, self._move(HALF_OPEN)
        return False, None

    def _succeeded(self) -> tuple[str, str] | None:
        if self._state == HALF_OPEN and self._trial == _caller():
            self._trial = None
            self._failures.clear()
            return self._move(CLOSED)
        return None

    def _failed(self) -> tuple[str, str] | None:
        now = self._clock()
        if self._state == HALF_OPEN and self._trial == _caller():
            self._trial = None
            self._opened_at = now
            return self._move(OPEN)
        if self._state != CLOSED:
            return None
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.failure_threshold:
            self._failures.clear()
            self._opened_at = now
            return self._move(OPEN)
        return None

    # --- telemetry, outside the lock -------------------------------------------------------------

    def _report(self, change: tuple[str, str] | None) -> None:
        if change is None:
            return
        row = self._transitions[change]
        event(self.component, f"breaker_{row.name}", row.status, message=row.message, level=row.level,
              event=f"circuit_breaker_{row.name}", logger=_logger, breaker=self.name,
              from_state=row.source, to_state=row.target)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(row.message, {"breaker": self.name, "from": row.source, "to": row.target})
        instruments.current().breaker_transitions.add(1, {"breaker": self.name, "from": row.source, "to": row.target})

    def _count(self, outcome: str) -> None:
        instruments.current().breaker_calls.add(1, {"breaker": self.name, "outcome": outcome})

    # --- the public protocol ---------------------------------------------------------------------

    def before_call(self) -> None:
        """Ask to call the dependency; raises :class:`CircuitOpenError` when the breaker says no."""
        with self._lock:
            allowed, change = self._admit()
            state = self._state
        self._report(change)
        if not allowed:
            self._count("rejected")
            raise CircuitOpenError(self.name, state)

    def after_call(self, exc: BaseException | None) -> None:
        """Record the outcome of an admitted call."""
        failed = exc is not None and isinstance(exc, self.failure_exceptions)
        with self._lock:
            change = self._failed() if failed else self._succeeded()
        self._count("failure" if failed else "success")
        self._report(change)

    def __enter__(self) -> Self:
        self.before_call()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        del exc_type, tb
        self.after_call(exc)

    def report(self) -> dict[str, Any]:
        """The breaker in the readiness report."""
        return {"state": self._state, "required": self.required}
