"""A service that calls itself over HTTP (httpx): what it forwards is what it echoes back."""

import httpx
from fastapi import FastAPI, Request

import qm_otel

app = FastAPI()


@app.get("/echo")
async def echo(request: Request) -> dict[str, str | None]:
    return {name: request.headers.get(name) for name in ("traceparent", "tracestate", "x-correlation-id")}


@app.get("/relay")
async def relay(request: Request) -> dict[str, str | None]:
    async with httpx.AsyncClient(base_url=str(request.base_url), timeout=10) as client:
        return (await client.get("/echo")).json()


qm_otel.setup(app=app)
