"""The benchmarked application: one JSON route that writes one log line, the same in every variant."""

from __future__ import annotations

import logging

from fastapi import FastAPI

log = logging.getLogger("app")


def make_app() -> FastAPI:
    """A fresh app with ``GET /items/{item_id}``."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, object]:
        log.info("item %s read", item_id, extra={"item_id": item_id})
        return {"id": item_id, "name": "widget", "price": 9.5}

    return app
