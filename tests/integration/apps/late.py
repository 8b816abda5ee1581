"""setup() first, the app created afterwards and instrumented with qm_otel.instrument_app()."""

import logging

from fastapi import FastAPI

import qm_otel

qm_otel.setup()
app = FastAPI()
log = logging.getLogger("itest")


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    log.info("working %d", n)
    return {"n": n}


qm_otel.instrument_app(app)
qm_otel.instrument_app(app)  # a second call changes nothing
