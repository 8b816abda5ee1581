"""A service with every kind of trouble the alert rules and dashboards watch, switched on by requests.

- ``/ok``; ``/fail`` (a 500); ``/sleep?ms=`` (a slow request); ``/block?ms=`` (a slow request that blocks
  the event loop: the watchdog's stall);
- ``/lookup/{key}?hit=`` (a cache hit or miss: all misses put the service in degraded mode);
- ``/pay`` through the ``payments`` breaker, whose dependency ``/switch?up=false`` takes down:
  3 failed calls open it, and it stays open for ``TEST_RECOVERY_S`` (default 300 s).
"""

import asyncio
import os
import time

from fastapi import FastAPI, HTTPException

import qm_otel

app = FastAPI()
qm_otel.setup(app=app)
dependency = {"up": True}
breaker = qm_otel.CircuitBreaker("payments", failure_threshold=3, window_s=10,
                                 recovery_s=float(os.environ.get("TEST_RECOVERY_S", "300")))


class DependencyDownError(RuntimeError):
    """The payments dependency is switched off."""


@app.get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


@app.get("/fail")
async def fail() -> dict[str, bool]:
    raise HTTPException(status_code=500, detail="failed on purpose")


@app.get("/sleep")
async def sleep(ms: float) -> dict[str, float]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.get("/block")
async def block(ms: float) -> dict[str, float]:
    time.sleep(ms / 1000)  # a sync call in an async handler: the event loop serves nobody meanwhile
    return {"blocked_ms": ms}


@app.get("/lookup/{key}")
async def lookup(key: str, hit: bool) -> dict[str, bool]:
    (qm_otel.cache_hit if hit else qm_otel.cache_miss)("profiles")
    return {"hit": hit}


@app.post("/switch")
async def switch(up: bool) -> dict[str, bool]:
    dependency["up"] = up
    return dependency


@app.get("/pay")
async def pay() -> dict[str, bool]:
    try:
        async with breaker:
            if not dependency["up"]:
                raise DependencyDownError("payments backend down")
    except qm_otel.CircuitOpenError as exc:
        raise HTTPException(status_code=503, detail="payments circuit open") from exc
    except DependencyDownError as exc:
        raise HTTPException(status_code=502, detail="payments failed") from exc
    return {"paid": True}
