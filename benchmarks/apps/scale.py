"""The benchmarked app with more work per request: SCALE_SPANS spans, SCALE_LOGS log lines, and a counter
whose ``tenant`` attribute takes one of SCALE_VALUES values (the request number modulo it)."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from opentelemetry import metrics, trace

import qm_otel

SPANS = int(os.environ.get("SCALE_SPANS", "1"))
LOGS = int(os.environ.get("SCALE_LOGS", "1"))
VALUES = int(os.environ.get("SCALE_VALUES", "1"))

app = FastAPI()
qm_otel.setup(app=app)
log = logging.getLogger("app")
tracer = trace.get_tracer("bench.scale")
orders = metrics.get_meter("bench.scale").create_counter("bench.orders", unit="{order}")


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, object]:
    for n in range(SPANS - 1):  # the server span is the first
        with tracer.start_as_current_span("step", attributes={"step": n}):
            pass
    for n in range(LOGS):
        log.info("item %s step %s", item_id, n, extra={"item_id": item_id})
    orders.add(1, {"tenant": f"t{item_id % VALUES}"})
    return {"id": item_id}


def flush() -> None:
    """Export everything buffered and close."""
    qm_otel.shutdown(timeout_s=120)
