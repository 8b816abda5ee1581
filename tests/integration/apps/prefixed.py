"""A real-application shape: routers under ``/api/v1`` (as in the full-stack FastAPI template), a crash."""

import logging

from fastapi import APIRouter, FastAPI

import qm_otel

log = logging.getLogger("app")
items = APIRouter(prefix="/items", tags=["items"])


@items.get("/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    log.info("item %d read", item_id)
    return {"id": item_id}


@items.get("/{item_id}/crash")
async def crash(item_id: int) -> dict[str, int]:
    raise RuntimeError(f"item {item_id} exploded")


api = APIRouter()
api.include_router(items)
app = FastAPI()
app.include_router(api, prefix="/api/v1")
qm_otel.setup(app=app)
