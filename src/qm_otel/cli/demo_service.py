"""The demo service: a few routes, a flaky dependency behind a circuit breaker, a slow route, events.

Run it either way; both give the same telemetry:

    uvicorn qm_otel.cli.demo_service:app                        # setup() below wires everything
    opentelemetry-instrument uvicorn qm_otel.cli.demo_service:app
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import httpx
from fastapi import FastAPI, HTTPException, Request

import qm_otel

app = FastAPI(title="qm-otel demo service")
qm_otel.setup(app=app)

log = logging.getLogger("demo")
_inventory_calls = itertools.count(1)


@app.get("/")
async def index() -> dict[str, str]:
    """The service's name and where its API docs are."""
    log.info("index served")
    return {"service": "qm-otel demo", "docs": "/docs"}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int | str]:
    """An item; a non-positive ID is a logged 4xx."""
    if item_id <= 0:
        log.warning("rejected item id %d", item_id)
        raise HTTPException(status_code=404, detail="no such item")
    log.info("item %d looked up", item_id)
    return {"id": item_id, "name": f"item-{item_id}"}


#: calls 2 to 4 of the inventory hit an outage
_OUTAGE = range(2, 5)
#: the inventory behind a circuit breaker (3 failures in 10 s open it; a trial after 1 s)
inventory_breaker = qm_otel.CircuitBreaker("inventory", failure_threshold=3, window_s=10, recovery_s=1.0,
                                           required=True, component="API")


@app.get("/inventory/{sku}")
async def inventory(sku: str) -> dict[str, int | str]:
    """The flaky dependency: calls 2-4 fail (an outage), the others answer."""
    if next(_inventory_calls) in _OUTAGE:
        log.error("inventory backend timed out for %s", sku)
        raise HTTPException(status_code=503, detail="inventory unavailable")
    return {"sku": sku, "in_stock": 7}


@app.get("/checkout/{sku}")
async def checkout(sku: str, request: Request) -> dict[str, int | str]:
    """Calls the flaky inventory over HTTP, through the breaker; the trace continues across the call."""
    try:
        async with inventory_breaker, httpx.AsyncClient(base_url=str(request.base_url), timeout=5.0) as client:
            response = await client.get(f"/inventory/{sku}")
            response.raise_for_status()
    except qm_otel.CircuitOpenError as exc:
        log.warning("checkout of %s refused: the inventory circuit is open", sku)
        raise HTTPException(status_code=503, detail="inventory circuit open") from exc
    except httpx.HTTPStatusError as exc:
        log.warning("checkout of %s failed: inventory answered %d", sku, exc.response.status_code)
        raise HTTPException(status_code=502, detail="inventory unavailable") from exc
    log.info("checkout of %s done", sku, extra={"in_stock": response.json()["in_stock"]})
    return {"sku": sku, "status": "ordered"}


@qm_otel.timed("TEMPLATE", "build_report", rows=1200)
async def build_report() -> None:
    """Slow work, timed by ``qm_otel.timed``."""
    await asyncio.sleep(0.25)
    log.info("report built")


@app.get("/slow")
async def slow() -> dict[str, str]:
    """A route over the response-time bands."""
    await build_report()  # a span, a record with duration_ms and a qm_otel.timed.duration point
    return {"report": "ready"}


@app.get("/blocking")
async def blocking() -> dict[str, str]:
    """A blocking call inside an ``async def`` handler: the event loop serves nobody while it sleeps.

    The event-loop watchdog takes the stack while the loop is stuck and writes one WARNING record that
    names the next line, with this request's trace (``qm-otel demo`` prints it).
    """
    time.sleep(0.4)  # the demo's deliberate mistake: `await asyncio.sleep(0.4)` would not block
    return {"blocked": "0.4 s"}


@app.post("/events")
async def events() -> dict[str, int]:
    """Execution-log events at several statuses."""
    qm_otel.event("FAMILY", "close_month", message="month closed", event="month_closed", month="2025-09")
    qm_otel.event("API", "send_invoices", "RETRY", message="invoice sending retried", invoices=3)
    return {"events": 2}

