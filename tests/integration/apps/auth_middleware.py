"""An app behind Starlette's ``AuthenticationMiddleware``: ``scope["user"]`` carries the user."""

from fastapi import FastAPI, Request
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import qm_otel


class User(BaseUser):
    def __init__(self, user_id: str, name: str) -> None:
        self.user_id, self.name = user_id, name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def identity(self) -> str:
        return self.user_id


class TokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if conn.headers.get("authorization") == "Bearer t-9":
            return AuthCredentials(["authenticated"]), User("u-99", "Grace Hopper")
        return None


app = FastAPI()
app.add_middleware(AuthenticationMiddleware, backend=TokenBackend())


@app.get("/me")
async def me(request: Request) -> dict[str, bool]:
    return {"authenticated": request.user.is_authenticated}


qm_otel.setup(app=app)
