"""The event-loop watchdog: which code blocked the loop, for how long, and inside which request.

A blocking call in an ``async def`` handler (``time.sleep``, a synchronous HTTP client, a CPU-heavy
loop, a sync database driver) stops the event loop: every other request waits, and the traces only
show that everything was slow at once. Patching asyncio's ``Handle._run`` (logfire's
``log_slow_async_callbacks``, aiodebug) names the slow callback after it returns, not the line that
blocked. This watchdog takes the stack *while* the loop is stuck, from another thread, and ties it to
the request it blocked.

How it works, per process (one watchdog, for the loop that serves):

- a **heartbeat** on the loop (``loop.call_later``, every threshold / 4) measures how late the loop
  runs it: the ``qm_otel.event_loop.lag`` histogram (seconds; Prometheus
  ``qm_otel_event_loop_lag_seconds``);
- a daemon thread, ``qm-otel-event-loop``, sleeps until the moment the next heartbeat would be
  ``threshold`` late. If the loop has not run it by then, the loop is **blocked**: the thread takes
  the loop thread's stack (``sys._current_frames()``), finds the task the loop is running
  (``asyncio.current_task(loop)``) and, in that task's ``contextvars.Context``, the request the server
  middleware registered (:data:`REQUEST`; a child task's context is a copy, so a handler run in an
  anyio task group is found too). It adds one span event ``qm_otel.event_loop.blocked`` to the
  request's server span at once (the span is still open: its request is the one blocked);
- when the loop turns again, the thread writes **one** WARNING record (logger
  ``qm_otel.event_loop``) for the whole stall, and counts it in ``qm_otel.event_loop.blocked``
  (Prometheus ``qm_otel_event_loop_blocked_total``, attribute ``http.route`` when the stall was inside
  a routed request). A stall of 5 s is one record with its total duration, not 25.

The record: ``event loop blocked for 812 ms (threshold 200 ms) in GET /slow at app.py:42 in slow_handler``
(``outside any request`` when no request was found), with ``event_loop.blocked_ms``,
``event_loop.threshold_ms``, ``code.stacktrace`` (the loop thread's stack, innermost last) and
``http.route``; as an execution-log record, ``component`` PERF, ``action`` EVENT_LOOP_BLOCKED,
``status`` DEGRADED, ``duration_ms`` and ``event`` event_loop_blocked. Its code location
(``code.file.path`` / ``code.function.name`` / ``code.line.number`` over OTLP, ``module`` /
``function`` / ``line`` in the JSON line) is the **blocking line**: the innermost frame of
application code (not the standard library, not site-packages, not qm-otel), else the innermost
frame. It is written in a context copied from the blocked task's, with the request's server span
current: it carries that request's trace and span IDs, its correlation ID and whatever
context variables the application's own log filters read.

The blocked duration is how late the heartbeat ran: a lower bound of the stall (it misses at most
threshold / 4 before the heartbeat was due), so a record never overstates. A stall that is still
going after :func:`cap_s` (30 s, or 5 thresholds when larger), or when :func:`stop` runs, is reported
once then, as ``event loop still blocked after ... ms``, with ``event_loop.still_blocked = true``;
its end writes nothing more (the lag histogram has it). A stall that ends within a few
milliseconds of crossing the threshold, before the thread got the GIL to look, shows only in the
lag histogram.

Cost: the heartbeat runs 4 times per threshold on the loop (one histogram measurement each), the
thread wakes about once per threshold while the loop is healthy; a request pays one context-variable
set and reset (:data:`REQUEST`) and one attribute compare (``epoch``). Started by qm-otel's server
middleware and lifespan hook (:func:`ensure_started`), on by default for ASGI apps
(``event_loop_watchdog``; threshold ``event_loop_block_ms``, default the response-time band's
``warning_max``); stopped by ``shutdown()``, when its loop closes, and in the child after ``fork``
(whose loop starts its own on its first lifespan or request).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.trace import Span

from qm_otel import _state
from qm_otel.core.config import SETTINGS, Settings
from qm_otel.core.conventions import conventions
from qm_otel.core.instruments import EVENT_LOOP_LAG_BUCKETS, INSTRUMENTS, Instruments

__all__ = [
    "BLOCKED",
    "LAG",
    "LAG_BUCKETS",
    "LOGGER",
    "REQUEST",
    "THREAD_NAME",
    "WatchedRequest",
    "blocking_frame",
    "cap_s",
    "ensure_started",
    "epoch",
    "is_application",
    "stop",
]

#: the instruments' names (``qm_otel_event_loop_lag_seconds``, ``qm_otel_event_loop_blocked_total`` in Prometheus)
LAG, BLOCKED = "qm_otel.event_loop.lag", "qm_otel.event_loop.blocked"
#: the lag histogram's bucket boundaries (seconds)
LAG_BUCKETS = EVENT_LOOP_LAG_BUCKETS
LOGGER = "qm_otel.event_loop"
THREAD_NAME = "qm-otel-event-loop"
EVENT = "qm_otel.event_loop.blocked"
_MAX_FRAMES = 100  # the innermost frames kept in code.stacktrace
_JOIN_S = 2.0
_logger = logging.getLogger(LOGGER)


class WatchedRequest(Protocol):
    """What the server middleware registers per request in :data:`REQUEST` for the watchdog to find."""

    @property
    def span(self) -> Span:
        """The request's server span."""

    def where(self) -> tuple[str, str | None]:
        """``("GET /items/{id}", "/items/{id}")``: the request as a record names it, and its route template.

        Called from the watchdog's thread while the loop is blocked inside the request.
        """


#: the request the current task serves (set by :class:`qm_otel.integrations.server.ServerTelemetryMiddleware`)
REQUEST: contextvars.ContextVar[WatchedRequest | None] = contextvars.ContextVar("qm_otel_request", default=None)

#: replaced whenever a watchdog starts or stops: the server middleware compares its copy per request
epoch: object = object()
_ACTIVE: _Watchdog | None = None
_LOCK = threading.Lock()


def cap_s(threshold_s: float) -> float:
    """How long a stall may go on before it is reported as still blocked: 30 s, or 5 thresholds when longer."""
    return max(30.0, 5 * threshold_s)


def _threshold_s(settings: Settings) -> float:
    configured = settings.event_loop_block_ms
    if configured is None:
        configured = conventions().bands["response_time"].warning
    return float(configured) / 1000.0


def ensure_started() -> object:
    """Start the process's watchdog on the running loop, if the settings want one and none runs; return :data:`epoch`.

    Called on the loop's thread (the server middleware's first request, the lifespan's start). One
    watchdog per process: while one watches a loop that is still open, this changes nothing.
    """
    global _ACTIVE, epoch  # noqa: PLW0603 - the process's one watchdog
    pipeline, settings = _state.PIPELINE.get(), SETTINGS.get()
    if pipeline is None or settings is None or not settings.event_loop_watchdog:
        return epoch
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return epoch
    with _LOCK:
        active = _ACTIVE
        if active is not None:
            if active.running and not active.loop.is_closed():
                return epoch
            active.stop(report=False, join=False)  # its loop closed: its thread is ending on its own
        watchdog = _Watchdog(loop, _threshold_s(settings), INSTRUMENTS.get() or Instruments.create(
            pipeline.meter_provider))
        watchdog.start()
        _ACTIVE = watchdog
        epoch = object()
        return epoch


def stop() -> None:
    """Stop the process's watchdog (``shutdown()``): a stall still going is reported once; the thread is joined."""
    global _ACTIVE, epoch  # noqa: PLW0603
    with _LOCK:
        active, _ACTIVE = _ACTIVE, None
        epoch = object()
    if active is not None:
        active.stop(report=True)


def _retire(watchdog: _Watchdog) -> None:
    """A watchdog whose thread ended (its loop closed): the next lifespan or request starts a new one."""
    global _ACTIVE, epoch  # noqa: PLW0603
    with _LOCK:
        if _ACTIVE is watchdog:
            _ACTIVE = None
            epoch = object()


def _after_fork_in_child() -> None:
    """The child has no watchdog thread: forget the parent's watchdog; the child's loop starts its own."""
    global _ACTIVE, _LOCK, epoch  # noqa: PLW0603
    _LOCK = threading.Lock()
    active, _ACTIVE = _ACTIVE, None
    epoch = object()
    if active is not None:
        active.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- where code lives: the blocking frame is the innermost one of the application's own code --

def _library_roots() -> tuple[str, ...]:
    roots: set[str] = set()
    for scheme_vars in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars) if scheme_vars else sysconfig.get_paths()
        for key in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):  # scripts: uvicorn's console script
            if paths.get(key):
                roots.add(os.path.realpath(paths[key]) + os.sep)
                roots.add(os.path.abspath(paths[key]) + os.sep)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # qm_otel/, not only runtime/
    roots.update({package + os.sep, os.path.realpath(package) + os.sep})
    return tuple(sorted(roots))


_LIBRARY_ROOTS = _library_roots()
_SELECTORS = f"{os.sep}selectors.py"
_LIBRARY_PARTS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def is_application(filename: str) -> bool:
    """Whether ``filename`` is the application's own code: not the standard library, site-packages or qm-otel."""
    if not filename or filename.startswith("<"):
        return False
    if any(part in filename for part in _LIBRARY_PARTS):
        return False
    return not filename.startswith(_LIBRARY_ROOTS)


def blocking_frame(stack: traceback.StackSummary, coroutines: Sequence[bool] = ()) -> traceback.FrameSummary | None:
    """The frame a blocked-loop record names, in ``stack`` (innermost last).

    The innermost frame of application code; else (an application installed in site-packages) the
    innermost frame of a coroutine (``coroutines``: a flag per frame), the ``async def`` that made
    the blocking call; else the innermost frame.
    """
    for frame in reversed(stack):
        if is_application(frame.filename):
            return frame
    for frame, coroutine in zip(reversed(stack), reversed(coroutines), strict=False):
        if coroutine:
            return frame
    return stack[-1] if stack else None


def _extract(frame: FrameType) -> tuple[traceback.StackSummary, list[bool]]:
    """The innermost :data:`_MAX_FRAMES` frames from ``frame`` out, innermost last, and which run a coroutine."""
    frames: list[tuple[FrameType, int]] = []
    current: FrameType | None = frame
    while current is not None and len(frames) < _MAX_FRAMES:
        frames.append((current, current.f_lineno or 0))
        current = current.f_back
    frames.reverse()
    stack = traceback.StackSummary.extract(iter(frames), limit=_MAX_FRAMES, lookup_lines=False)
    return stack, [bool(f.f_code.co_flags & inspect.CO_COROUTINE) for f, _ in frames]


def _task_context(task: asyncio.Task[Any]) -> contextvars.Context | None:
    """The ``contextvars.Context`` a task runs in, read from another thread.

    Python 3.12 has ``Task.get_context()``; on 3.11 the C task's context is the first
    ``Context`` its traversal visits (``task_context``, before the done-callbacks' contexts), the
    pure-Python task keeps it in ``_context``.
    """
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        found = get_context()
        return found if isinstance(found, contextvars.Context) else None
    found = getattr(task, "_context", None)
    if isinstance(found, contextvars.Context):
        return found
    for referent in gc.get_referents(task):
        if isinstance(referent, contextvars.Context):
            return referent
    return None


@dataclass
class _Stall:
    """What the thread saw when it found the loop blocked."""

    turn: int  # the heartbeat count then: the loop has turned again once it differs
    due: float  # when the heartbeat was due (monotonic)
    late_s: float  # how late it was at detection
    stack: str
    path: str
    function: str
    line: int
    variables: list[tuple[contextvars.ContextVar[Any], Any]]
    span: Span | None
    where: str  # "GET /slow", or "outside any request"
    route: str | None
    reported: bool = False


class _Watchdog:
    """The heartbeat on one loop and the thread that watches it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float, instruments: Instruments) -> None:
        self.loop = loop
        self.threshold_s = threshold_s
        self.interval_s = threshold_s / 4
        self.cap_s = cap_s(threshold_s)
        self._loop_thread = threading.get_ident()
        self._lag: Histogram = instruments.event_loop_lag
        self._blocked: Counter = instruments.event_loop_blocked
        self._due = time.monotonic() + self.interval_s
        self._turn = 0
        self._stall_end: tuple[int, float] = (0, 0.0)  # (the turn that ended a stall, its lateness)
        self._resync = False
        self._stopped = False
        self._stall: _Stall | None = None
        self._wake = threading.Event()
        self._report_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread.is_alive()

    def start(self) -> None:
        """Schedule the first heartbeat (on the loop's thread) and start the thread."""
        self._due = time.monotonic() + self.interval_s
        self.loop.call_later(self.interval_s, self._beat)
        self._thread.start()

    # -- on the loop --

    def _beat(self) -> None:
        if self._stopped:
            return
        now = time.monotonic()
        late = now - self._due
        self._due = now + self.interval_s
        self.loop.call_later(self.interval_s, self._beat)  # first: a failure below never ends the heartbeat
        resync = self._resync
        if resync:  # the loop was stopped in between: that wait is not lateness
            self._resync = False
        elif late > self.threshold_s:
            self._stall_end = (self._turn + 1, late)
        self._turn += 1
        if not resync:
            self._lag.record(late if late > 0.0 else 0.0)

    # -- on the thread --

    def _run(self) -> None:
        wait = self.interval_s
        try:
            while not self._wake.wait(wait) and not self._stopped:
                wait = self._check()
                if wait <= 0.0:
                    break
        except Exception:  # the watchdog never takes the process down: it stops, and says so
            _logger.exception("qm-otel: the event-loop watchdog failed and stopped")
        finally:
            self._stopped = True
            _retire(self)

    def _check(self) -> float:
        """Look at the loop once; return how long to sleep (0: stop, the loop is closed)."""
        loop = self.loop
        stall = self._stall
        if stall is not None:
            if self._turn != stall.turn or not loop.is_running():
                self._stall = None
                self._ended(stall)
            elif not stall.reported and time.monotonic() - stall.due >= self.cap_s:
                self._report(stall, time.monotonic() - stall.due, still=True)
            if self._stall is not None:
                return self.interval_s
        if loop.is_closed():
            self._stopped = True
            return 0.0
        if not loop.is_running():
            self._resync = True
            return self.interval_s
        turn = self._turn
        late = time.monotonic() - self._due
        if late <= self.threshold_s:
            return self.threshold_s - late + 0.001  # wake when the next heartbeat would be past the threshold
        stall = self._take(turn, late)
        if stall is not None:
            self._stall = stall
        return self.interval_s

    def _ended(self, stall: _Stall) -> None:
        if stall.reported:
            return
        end_turn, late = self._stall_end
        blocked = late if end_turn == stall.turn + 1 else stall.late_s
        self._report(stall, max(blocked, stall.late_s), still=False)

    def _take(self, turn: int, late: float) -> _Stall | None:
        """The blocked loop's stack and request, and the span event on the request's server span."""
        frame = sys._current_frames().get(self._loop_thread)  # the one way to another thread's stack
        if frame is None or self._turn != turn:
            return None
        stack, coroutines = _extract(frame)
        del frame
        if self._turn != turn:  # it turned while the stack was read: not blocked any more
            return None
        innermost = stack[-1] if stack else None
        if innermost is not None and innermost.name == "select" and innermost.filename.endswith(_SELECTORS):
            return None  # waiting for I/O, not blocked: the loop thread has not had a CPU yet (a starved machine)
        blocking = blocking_frame(stack, coroutines)
        task = asyncio.current_task(self.loop)
        context = _task_context(task) if task is not None else None
        variables = list(context.items()) if context is not None else []
        request = context.get(REQUEST) if context is not None else None
        span, where, route = None, "outside any request", None
        if request is not None:
            span = request.span
            try:
                where, route = request.where()
            except Exception:  # a scope the route cannot be read from: the request is still the one blocked
                where = "a request"
        stall = _Stall(turn, self._due, late, "".join(stack.format()),
                       blocking.filename if blocking else "", blocking.name if blocking else "",
                       (blocking.lineno or 0) if blocking else 0, variables, span, where, route)
        if span is not None and span.is_recording():
            span.add_event(EVENT, {
                "event_loop.threshold_ms": self.threshold_s * 1000.0,
                "code.stacktrace": stall.stack,
                "code.file.path": stall.path,
                "code.function.name": stall.function,
                "code.line.number": stall.line,
            })
        return stall

    def _report(self, stall: _Stall, blocked_s: float, *, still: bool) -> None:
        """Count the stall and write its one record, in a context copied from the blocked task's."""
        with self._report_lock:
            if stall.reported:
                return
            stall.reported = True
        self._blocked.add(1, {"http.route": stall.route} if stall.route else None)
        if _logger.isEnabledFor(logging.WARNING):
            contextvars.Context().run(self._write, stall, blocked_s, still)

    def _write(self, stall: _Stall, blocked_s: float, still: bool) -> None:
        for variable, value in stall.variables:
            variable.set(value)
        if stall.span is not None:  # the server span, not a client span the handler had open
            otel_context.attach(trace.set_span_in_context(stall.span, otel_context.get_current()))
        blocked_ms, threshold_ms = blocked_s * 1000.0, self.threshold_s * 1000.0
        state = "still blocked after" if still else "blocked for"
        message = (f"event loop {state} {blocked_ms:.0f} ms (threshold {threshold_ms:g} ms) in {stall.where} "
                   f"at {os.path.basename(stall.path) or '?'}:{stall.line} in {stall.function or '?'}")
        fields: dict[str, Any] = {  # an execution-log record too: PERF|EVENT_LOOP_BLOCKED|ms|DEGRADED in pipe form
            "component": "PERF", "action": "EVENT_LOOP_BLOCKED", "status": "DEGRADED", "event": "event_loop_blocked",
            "duration_ms": round(blocked_ms, 1),
            "event_loop.blocked_ms": round(blocked_ms, 1),
            "event_loop.threshold_ms": threshold_ms,
            "code.stacktrace": stall.stack,
        }
        if stall.route:
            fields["http.route"] = stall.route
        if still:
            fields["event_loop.still_blocked"] = True
        record = _logger.makeRecord(_logger.name, logging.WARNING, stall.path, stall.line, message, (), None,
                                    func=stall.function, extra=fields)
        _logger.handle(record)

    # -- stopping --

    def stop(self, *, report: bool, join: bool = True) -> None:
        """Stop the heartbeat and the thread; ``report``: a stall still going is reported once, as still blocked."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if join and thread.is_alive() and thread is not threading.current_thread():
            thread.join(_JOIN_S)
        stall, self._stall = self._stall, None
        if report and stall is not None:
            if self._turn != stall.turn:
                self._ended(stall)
            else:
                self._report(stall, time.monotonic() - stall.due, still=True)

    def forget(self) -> None:
        """After ``fork``, in the child: the thread is gone; the heartbeat stops at its next turn."""
        self._stopped = True
        self._stall = None

