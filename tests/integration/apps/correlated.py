"""Routes that log from every place a request's work can run, and call a second service.

Imported as is under ``opentelemetry-instrument``; ``correlated_setup`` wires it with ``setup()``.
"""

import asyncio
import logging

import httpx
from fastapi import BackgroundTasks, Depends, FastAPI

import qm_otel

app = FastAPI()
log = logging.getLogger("itest")


def dependency() -> str | None:
    log.info("in dependency")
    return qm_otel.correlation_id()


def in_background() -> None:
    log.info("in background")


def in_executor() -> None:
    log.info("in executor")


async def in_task() -> None:
    log.info("in task")


@app.get("/log")
async def log_everywhere(tasks: BackgroundTasks, seen: str | None = Depends(dependency)) -> dict[str, str | None]:
    log.info("in handler")
    await asyncio.create_task(in_task())
    await asyncio.get_running_loop().run_in_executor(None, in_executor)
    tasks.add_task(in_background)
    return {"correlation_id": qm_otel.correlation_id(), "in_dependency": seen}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@app.get("/call")
async def call(url: str) -> dict[str, object]:
    log.info("calling downstream")
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
    return {"downstream": response.json(), "downstream_header": response.headers.get("x-correlation-id")}


@app.get("/fetch")
async def fetch(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url, params={"api_key": "keysecret-123", "page": "2"})
    return {"status": response.status_code}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
