"""An application as a team deploys it under the OpenTelemetry Operator: no qm_otel import, its own FastAPI.

Served from its own virtualenv (FastAPI 0.110.0, pydantic < 2.8) by
tests/integration/test_operator_injection.py, with only the environment the Operator injects: qm-otel
arrives through ``sitecustomize`` from the auto-instrumentation directory on ``PYTHONPATH``.
"""

import logging
import sys

import fastapi
import pydantic
from fastapi import FastAPI

app = FastAPI()
log = logging.getLogger("shop")


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    log.info("working %d", n)
    return {"n": n}


@app.get("/versions")
async def versions() -> dict[str, object]:
    """What this process runs on: the framework's version and file, pydantic's, and where they came from."""
    return {
        "fastapi": fastapi.__version__,
        "fastapi_file": fastapi.__file__,
        "pydantic": pydantic.VERSION,
        "pydantic_file": pydantic.__file__,
        "sys_path": sys.path,
        "qm_otel_loaded": "qm_otel" in sys.modules,
    }
