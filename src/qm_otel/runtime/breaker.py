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

A call cut off by a timeout (``TimeoutError``, ``asyncio.wait_for``/``asyncio.timeout`` around it) or
cancelled (``asyncio.CancelledError``) counts as a failure and is re-raised: a dependency that
hangs opens the breaker like one that fails. ``call_timeout_s`` gives the breaker a timeout of its
own: an async call (``async with``, a decorated coroutine function) is cancelled after it and
raises ``TimeoutError``; a sync call cannot be interrupted, so one that returns after it counts
as a failure. A trial call that has not returned after ``call_timeout_s`` (else ``recovery_s``)
is taken as failed, so a trial whose caller hangs does not keep the breaker HALF_OPEN for good.
The failure window holds at most ``failure_threshold`` timestamps, however many calls fail.

Each transition is logged as the conventions table says (level, message, status), added as an
event on the current span and counted; the state, the calls by outcome and the transitions are
metrics. The lock is held only to read or change the state, never while the dependency runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from opentelemetry import metrics, trace

from qm_otel.core import instruments
from qm_otel.core.conventions import conventions
from qm_otel.core.work_context import SyncAsyncContext
from qm_otel.runtime.events import event

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
        failure_exceptions: which exceptions count as failures (others pass through, counted as
            successes: the dependency answered); timeouts and cancellations always count.
        call_timeout_s: the breaker's own timeout per call (see above); None for none.
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
        call_timeout_s: float | None = None,
        required: bool = False,
        clock: Callable[[], float] = time.monotonic,
        component: str = "SYSTEM",
    ) -> None:
        defaults = conventions().breaker
        self.name = name
        self.failure_threshold = failure_threshold or defaults.failure_threshold
        self.window_s = window_s if window_s is not None else defaults.window_s
        self.recovery_s = recovery_s if recovery_s is not None else defaults.recovery_s
        bad_timeout = call_timeout_s is not None and not 0 < call_timeout_s < float("inf")
        if self.failure_threshold < 1 or self.window_s <= 0 or self.recovery_s < 0 or bad_timeout:
            message = (f"CircuitBreaker {name!r}: failure_threshold must be >= 1, window_s > 0, recovery_s >= 0 "
                       f"and call_timeout_s positive or None; got {self.failure_threshold}, {self.window_s}, "
                       f"{self.recovery_s}, {call_timeout_s}")
            raise ValueError(message)
        self.failure_exceptions = failure_exceptions
        self.call_timeout_s = call_timeout_s
        self.required = required
        self.component = component
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._trial: tuple[int, int] | None = None
        self._trial_started = 0.0
        self._transitions = defaults.transitions
        #: per task/thread: the stack of (started, asyncio timeout) of this breaker's calls in flight
        self._calls: contextvars.ContextVar[tuple[tuple[float, asyncio.Timeout | None], ...]] = (
            contextvars.ContextVar(f"qm_otel_breaker_calls_{name}", default=()))
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
        now = self._clock()
        trial_bound = self.call_timeout_s if self.call_timeout_s is not None else self.recovery_s
        if self._state == HALF_OPEN and now - self._trial_started > trial_bound:
            self._trial = None  # the trial's caller never came back: it failed
            self._opened_at = now
            return False, self._move(OPEN)
        if self._state == OPEN and now - self._opened_at >= self.recovery_s:
            self._trial = _caller()
            self._trial_started = now
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

    def _is_failure(self, exc: BaseException | None) -> bool:
        if exc is None:
            return False
        if isinstance(exc, TimeoutError | asyncio.CancelledError):
            return True  # cut off by a timeout or cancelled: the dependency did not answer in time
        if isinstance(exc, Exception):
            return isinstance(exc, self.failure_exceptions)
        # KeyboardInterrupt, SystemExit, GeneratorExit: the caller went away; a trial is lost
        return isinstance(exc, self.failure_exceptions) or self._trial == _caller()

    def after_call(self, exc: BaseException | None, *, elapsed_s: float | None = None) -> None:
        """Record the outcome of an admitted call (``elapsed_s``: how long it took, for ``call_timeout_s``)."""
        slow = elapsed_s is not None and self.call_timeout_s is not None and elapsed_s > self.call_timeout_s
        failed = slow or self._is_failure(exc)
        with self._lock:
            change = self._failed() if failed else self._succeeded()
        self._count("failure" if failed else "success")
        self._report(change)

    def __enter__(self) -> Self:
        self.before_call()
        self._calls.set((*self._calls.get(), (self._clock(), None)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        del exc_type, tb
        self.after_call(exc, elapsed_s=self._pop_call())

    def _pop_call(self) -> float | None:
        calls = self._calls.get()
        if not calls:
            return None
        self._calls.set(calls[:-1])
        return self._clock() - calls[-1][0]

    async def __aenter__(self) -> Self:
        self.before_call()
        timeout = asyncio.timeout(self.call_timeout_s) if self.call_timeout_s is not None else None
        if timeout is not None:
            await timeout.__aenter__()
        self._calls.set((*self._calls.get(), (self._clock(), timeout)))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        calls = self._calls.get()
        timeout = calls[-1][1] if calls else None
        if calls:
            self._calls.set(calls[:-1])
        try:
            if timeout is not None:
                await timeout.__aexit__(exc_type, exc, tb)  # our own timeout's CancelledError → TimeoutError
        except TimeoutError as timed_out:
            self.after_call(timed_out)
            raise
        self.after_call(exc)

    def report(self) -> dict[str, Any]:
        """The breaker in the readiness report."""
        return {"state": self._state, "required": self.required}
