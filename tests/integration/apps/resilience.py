"""A service with a flaky HTTP dependency behind a circuit breaker, readiness checks and a cache."""

import os

import httpx
from fastapi import FastAPI, HTTPException, Request

import qm_otel

app = FastAPI()
qm_otel.setup(app=app)
dependency_state = {"up": True, "calls": 0, "db_up": True}
breaker = qm_otel.CircuitBreaker("payments", failure_threshold=3, window_s=10,
                                 recovery_s=float(os.environ.get("TEST_RECOVERY_S", "0.5")), required=True)
qm_otel.add_check("database", lambda: dependency_state["db_up"], required=True)
qm_otel.add_check("search", lambda: False, required=False)  # optional: reported, never blocks readiness


@app.get("/payments-backend")
async def payments_backend() -> dict[str, bool]:
    """The flaky dependency itself, switched up and down by the test."""
    dependency_state["calls"] += 1
    if not dependency_state["up"]:
        raise HTTPException(status_code=503, detail="down")
    return {"paid": True}


@app.post("/switch")
async def switch(up: bool | None = None, db_up: bool | None = None) -> dict[str, object]:
    if up is not None:
        dependency_state["up"] = up
    if db_up is not None:
        dependency_state["db_up"] = db_up
    return dependency_state


@app.get("/pay")
async def pay(request: Request) -> dict[str, object]:
    try:
        async with breaker, httpx.AsyncClient(base_url=str(request.base_url), timeout=10) as client:
            response = await client.get("/payments-backend")
            response.raise_for_status()
    except qm_otel.CircuitOpenError as exc:
        raise HTTPException(status_code=503, detail="payments circuit open") from exc
    except httpx.HTTPError as exc:
        raise HTTPException(status_code=502, detail="payments failed") from exc
    return {"paid": True}


@app.get("/lookup/{key}")
async def lookup(key: str, hit: bool) -> dict[str, bool]:
    (qm_otel.cache_hit if hit else qm_otel.cache_miss)("profiles")
    return {"hit": hit}
