"""The same routes with no qm_otel import at all: for the opentelemetry-instrument launch path."""

import logging

from fastapi import FastAPI

app = FastAPI()
log = logging.getLogger("itest")


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    log.info("working %d", n)
    return {"n": n}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
