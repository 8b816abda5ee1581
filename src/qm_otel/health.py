"""Liveness and readiness: ``/healthz`` answers at once; ``/readyz`` reports every check and breaker.

>>> qm_otel.add_check("database", ping_database, required=True)   # doctest: +SKIP

A check is a function (sync or async) that returns normally when the dependency is up and raises
(or returns False) when it is down; it gets ``timeout_s`` to answer. Readiness is 503 when a
required check is down or a required circuit breaker is open. Both endpoints are excluded from
traces and from the request log by default; :mod:`qm_otel.integrations.health` serves them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qm_otel.breaker import OPEN, breakers
from qm_otel.caches import degraded

__all__ = ["Check", "add_check", "readiness", "remove_check"]

CheckFunction = Callable[[], Any] | Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Check:
    """A registered dependency check."""

    name: str
    function: CheckFunction
    required: bool = True
    timeout_s: float = 2.0


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
        if inspect.iscoroutinefunction(check.function):
            result = await asyncio.wait_for(check.function(), check.timeout_s)
        else:
            result = await asyncio.wait_for(asyncio.to_thread(check.function), check.timeout_s)
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
