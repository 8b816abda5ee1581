"""The W3C Trace Context test suite's service: called with trace headers, it calls the harness back.

The harness (``w3c/trace-context``'s ``test/test.py``) POSTs a JSON list of ``{"url": ..., "arguments":
[...]}`` to the service; for each item the service POSTs ``arguments`` to ``url`` with httpx (instrumented),
and the harness reads the ``traceparent`` and ``tracestate`` that callback carries. Imported as is under
``opentelemetry-instrument``; ``tracecontext_relay_setup`` wires it with ``setup()``.
"""

from typing import Any

import httpx
from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/test")
async def relay(request: Request) -> dict[str, list[str]]:
    """Call each URL back; answer with the trace header lines the app itself was handed."""
    calls: list[dict[str, Any]] = await request.json()
    async with httpx.AsyncClient(timeout=10) as client:
        for call in calls:
            await client.post(call["url"], json=call.get("arguments", []))
    return {name: request.headers.getlist(name) for name in ("traceparent", "tracestate", "baggage")}
