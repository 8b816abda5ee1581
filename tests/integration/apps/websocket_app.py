"""A WebSocket route (echo until "bye") and one whose handler fails."""

import logging

from fastapi import FastAPI, WebSocket

import qm_otel

app = FastAPI()
log = logging.getLogger("app")


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    while (text := await websocket.receive_text()) != "bye":
        log.info("echo in %s", room)
        await websocket.send_text(text)
    await websocket.close(code=1000)


@app.websocket("/broken")
async def broken(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("the handler failed")


qm_otel.setup(app=app)
