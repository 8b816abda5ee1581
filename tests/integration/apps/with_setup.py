"""A FastAPI app wired with qm_otel.setup(app=app), called twice on purpose."""

import logging

from fastapi import FastAPI

import qm_otel

app = FastAPI()
first = qm_otel.setup(app=app)
second = qm_otel.setup(app=app)
log = logging.getLogger("itest")


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    log.info("working %d", n)
    return {"n": n}


@app.get("/same-handle")
async def same_handle() -> dict[str, bool]:
    return {"same": first is second}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
