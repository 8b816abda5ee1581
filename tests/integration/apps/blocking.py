"""Handlers that block the event loop, for the event-loop watchdog's tests.

Imported as is under ``opentelemetry-instrument``; ``blocking_setup`` wires it with ``setup()``.
Each blocking line carries a ``BLOCKS:`` marker: the tests find the line the record must name by it.
"""

import asyncio
import threading
import time

import httpx
from fastapi import FastAPI

app = FastAPI()


def spin(seconds: float) -> int:
    """A CPU loop holding the GIL for ``seconds``."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:  # BLOCKS: cpu
        n += 1
    return n


@app.get("/sleep")
async def sleeps() -> dict[str, bool]:
    time.sleep(0.5)  # BLOCKS: sleep
    return {"slept": True}


@app.get("/sync-http")
async def sync_http(url: str) -> dict[str, int]:
    response = httpx.get(url, timeout=30)  # BLOCKS: sync-http
    return {"status": response.status_code}


@app.get("/cpu")
async def cpu() -> dict[str, int]:
    return {"turns": spin(0.5)}


@app.get("/stall/{seconds}")
async def stall(seconds: float) -> dict[str, float]:
    time.sleep(seconds)  # BLOCKS: stall
    return {"slept": seconds}


@app.get("/fine/{n}")
async def fine(n: int) -> dict[str, int]:
    await asyncio.sleep(0.001)
    return {"n": n}


@app.get("/threads")
async def threads() -> list[str]:
    return [thread.name for thread in threading.enumerate()]


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
