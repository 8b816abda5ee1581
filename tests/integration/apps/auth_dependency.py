"""An app that authenticates in a dependency, as FastAPI apps mostly do (``get_current_user``)."""

import logging

from fastapi import Depends, FastAPI, Header, HTTPException

import qm_otel

app = FastAPI()
log = logging.getLogger("app")
USERS = {"t-1": ("u-17", "Ada Lovelace"), "t-2": ("u-18", "Alan Turing")}


def _user(authorization: str | None) -> tuple[str, str]:
    token = (authorization or "").removeprefix("Bearer ")
    if token not in USERS:
        raise HTTPException(status_code=401, detail="unknown token")
    return USERS[token]


async def get_current_user(authorization: str | None = Header(default=None)) -> tuple[str, str]:
    user_id, name = _user(authorization)
    qm_otel.set_user(user_id)
    return user_id, name


def get_current_user_sync(authorization: str | None = Header(default=None)) -> tuple[str, str]:
    """A sync dependency: FastAPI runs it in a worker thread with a copy of the request's context."""
    user_id, name = _user(authorization)
    qm_otel.set_user(user_id)
    return user_id, name


@app.get("/me")
async def me(user: tuple[str, str] = Depends(get_current_user)) -> dict[str, str]:
    return {"id": user[0]}


@app.get("/me-sync")
async def me_sync(user: tuple[str, str] = Depends(get_current_user_sync)) -> dict[str, str]:
    return {"id": user[0]}


@app.get("/public")
async def public() -> dict[str, bool]:
    return {"public": True}


@app.get("/search")
async def search(q: str = "") -> dict[str, str]:
    return {"q": q}


def log_here() -> None:
    log.info("logged from a known place")  # LOG_HERE_LINE


@app.get("/where")
async def where() -> dict[str, bool]:
    log_here()
    return {"ok": True}


qm_otel.setup(app=app)
