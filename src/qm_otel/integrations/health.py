"""The liveness and readiness endpoints as Starlette routes (the checks live in :mod:`qm_otel.runtime.health`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from qm_otel.runtime.health import readiness

__all__ = ["health_routes"]


async def _liveness(request: Request) -> JSONResponse:
    del request
    return JSONResponse({"status": "ok"})


async def _readiness(request: Request) -> JSONResponse:
    del request
    ready, body = await readiness()
    return JSONResponse(body, status_code=200 if ready else 503)


def health_routes(health_path: str, ready_path: str) -> list[Route]:
    """The two endpoints as Starlette routes."""
    return [
        Route(health_path, _liveness, methods=["GET", "HEAD"], name="qm_otel_liveness"),
        Route(ready_path, _readiness, methods=["GET", "HEAD"], name="qm_otel_readiness"),
    ]
