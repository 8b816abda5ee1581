"""A plain Starlette app (no FastAPI): the correlation rules hold for it too."""

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import qm_otel

log = logging.getLogger("itest")


async def thing(request: Request) -> JSONResponse:
    log.info("thing %s", request.path_params["thing_id"])
    return JSONResponse({"correlation_id": qm_otel.correlation_id()})


app = Starlette(routes=[Route("/things/{thing_id}", thing)])
