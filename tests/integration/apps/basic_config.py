"""An application that configured logging itself before qm-otel (``logging.basicConfig``)."""

import logging
import sys

from fastapi import FastAPI

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))  # and a second console handler
import qm_otel  # noqa: E402 - the point: qm-otel comes after the app's own logging set-up

app = FastAPI()
log = logging.getLogger("app")


@app.get("/hello")
async def hello() -> dict[str, str]:
    log.info("hello once")
    return {"hello": "world"}


qm_otel.setup(app=app)
