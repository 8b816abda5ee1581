"""Liveness and readiness: ``/healthz`` answers at once; ``/readyz`` reports every check and breaker.

>>> qm_otel.add_check("database", ping_database, required=True)   # doctest: +SKIP

A check is a function (sync or async) that returns normally when the dependency is up and raises
(or returns False) when it is down; it gets ``timeout_s`` to answer, else it is reported down.
Readiness is 503 when a required check is down or a required circuit breaker is open.

A check that hangs must not take the application with it. Each check has at most one run in
flight: probes that arrive while it runs wait for that run (up to their timeout) instead of
starting another. A sync check runs in a daemon thread of its own, never in the event loop's
default executor (which ``asyncio.to_thread`` and Starlette's sync endpoints share) and never in
a thread the interpreter waits for at exit: a hung check holds one thread and shutdown does not
wait for it. An async check runs as a task on the probing loop and is cancelled at its timeout.

Both endpoints are excluded from traces and from the request log by default;
:mod:`qm_otel.integrations.health` serves them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qm_otel.runtime.breaker import OPEN, breakers
from qm_otel.runtime.degraded_mode import degraded

__all__ = ["Check", "add_check", "readiness", "remove_check"]

CheckFunction = Callable[[], Any] | Callable[[], Awaitable[Any]]


@dataclass(eq=False)
class Check:
    """A registered dependency check, and its run in flight (at most one)."""

    name: str
    function: CheckFunction
    required: bool = True
    timeout_s: float = 2.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _running: concurrent.futures.Future[Any] | None = field(default=None, repr=False)
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)

    def _sync_run(self) -> concurrent.futures.Future[Any]:
        """The sync check's run in flight, started in its own daemon thread if none is."""
        with self._lock:
            if self._running is not None and not self._running.done():
                return self._running
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._running = future

        def work() -> None:
            try:
                result = self.function()
            except BaseException as exc:  # handed to the probe that reports it
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name=f"qm-otel-check-{self.name}", daemon=True).start()
        return future

    def _async_run(self) -> asyncio.Task[Any]:
        """The async check's run in flight on this loop, started if none is."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            coroutine: Awaitable[Any] = self.function()
            task = self._task = loop.create_task(_awaited(coroutine), name=f"qm-otel-check-{self.name}")
        return task

    async def run(self) -> Any:
        """The check's result; ``TimeoutError`` after ``timeout_s`` (the run itself is never awaited longer)."""
        if inspect.iscoroutinefunction(self.function):
            task = self._async_run()
            done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
            if not done:
                task.cancel()  # not awaited: a check that ignores cancellation is not waited for
                raise TimeoutError
            return task.result()
        return await asyncio.wait_for(_waiter(self._sync_run()), self.timeout_s)


def _waiter(running: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
    """A future of the probing loop that takes the thread's outcome, if the loop is still there then."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def settle(done: concurrent.futures.Future[Any]) -> None:
        if waiter.done():  # the probe gave up (timeout) before the check answered
            return
        error = done.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    def hand_over(done: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed probing loop: nobody waits any more
            loop.call_soon_threadsafe(settle, done)

    running.add_done_callback(hand_over)
    return waiter


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_CHECKS: dict[str, Check] = {}


def add_check(name: str, function: CheckFunction, *, required: bool = True, timeout_s: float = 2.0) -> None:
    """Register (or replace) the readiness check called ``name``."""
    if timeout_s <= 0:
        message = f"add_check({name!r}): timeout_s must be positive, got {timeout_s!r}"
        raise ValueError(message)
    _CHECKS[name] = Check(name, function, required, timeout_s)


def remove_check(name: str) -> None:
    """Forget the check called ``name`` (no error if there is none)."""
    _CHECKS.pop(name, None)


async def _run(check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await check.run()
        up, error = result is not False, None if result is not False else "returned False"
    except TimeoutError:
        up, error = False, f"no answer within {check.timeout_s}s"
    except Exception as exc:  # a failing check is a report, not a crash of the endpoint
        up, error = False, type(exc).__name__
    report: dict[str, Any] = {
        "status": "up" if up else "down",
        "required": check.required,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
    }
    if error:
        report["error"] = error
    return report


async def readiness() -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently; report them, the breakers and the degraded flag."""
    checks = list(_CHECKS.values())
    results = await asyncio.gather(*(_run(check) for check in checks))
    check_reports = dict(zip((c.name for c in checks), results, strict=True))
    breaker_reports = {b.name: b.report() for b in breakers()}
    degraded_caches = degraded()
    ready = all(r["status"] == "up" for r in check_reports.values() if r["required"]) and not any(
        r["required"] and r["state"] == OPEN for r in breaker_reports.values()
    )
    return ready, {
        "status": "ready" if ready else "not_ready",
        "checks": check_reports,
        "breakers": breaker_reports,
        "degraded": bool(degraded_caches),
        "degraded_caches": degraded_caches,
    }
