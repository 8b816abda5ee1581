"""Who made the request: ``qm_otel.set_user(user_id)`` from the app's auth code, or Starlette's ``scope["user"]``.

>>> async def get_current_user(token: str = Depends(oauth2)) -> User:   # doctest: +SKIP
...     user = await users.by_token(token)
...     qm_otel.set_user(user.id)
...     return user

The server middleware opens a :class:`UserSlot` per request before the app runs. FastAPI runs a
sync dependency in a worker thread with a *copy* of the request's context, so a context variable
set there would not be seen when the response ends; the slot is one shared object, so a
``set_user`` anywhere in the request is. The ID goes on the server span as ``user.id`` at once,
and on the request-log record (``user_id`` in JSON, ``user.id`` over OTLP) when the request ends.

Only an ID is taken by default. ``scope["user"]`` (Starlette's ``AuthenticationMiddleware``) gives
its ``identity``, never its ``display_name``; a name is recorded only when the application
passes one to ``set_user(..., name=...)``. A field whose name the redaction list matches
(``sensitive_fields``) is left out of the request log; values are capped at 256 characters.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace

from qm_otel.core.redaction import is_sensitive

__all__ = ["USER_ID", "USER_NAME", "UserSlot", "close_slot", "open_slot", "set_user", "user_of"]

#: the semantic-convention attribute names
USER_ID, USER_NAME = "user.id", "user.name"
_MAX = 256
_SLOT: contextvars.ContextVar[UserSlot | None] = contextvars.ContextVar("qm_otel_user", default=None)


class UserSlot:
    """The user of one request, filled in by whoever authenticates it."""

    __slots__ = ("name", "user_id")

    def __init__(self) -> None:
        self.user_id: str | None = None
        self.name: str | None = None


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        message = f"qm_otel.set_user: {what} must be a str or an int, got {type(value).__name__}"
        raise TypeError(message)
    text = str(value).strip()
    if not text or any(ord(c) < 32 for c in text):
        message = f"qm_otel.set_user: {what} must be non-empty printable text, got {value!r}"
        raise ValueError(message)
    return text[:_MAX]


def set_user(user_id: str | int, *, name: str | None = None) -> None:
    """Record the authenticated user of the current request (its ID; a name only if given here).

    Call it where the application authenticates (a FastAPI dependency such as ``get_current_user``).
    Outside a request it only tags the current span, if any.

    Raises:
        TypeError, ValueError: for an ID or name that is not short printable text or an int.

    """
    identity = _text(user_id, "user_id")
    shown = _text(name, "name") if name is not None else None
    slot = _SLOT.get()
    if slot is not None:
        slot.user_id, slot.name = identity, shown
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(USER_ID, identity)
        if shown is not None:
            span.set_attribute(USER_NAME, shown)


def open_slot() -> tuple[UserSlot, contextvars.Token[UserSlot | None]]:
    """A fresh slot for one request (the middleware resets the token when the request ends)."""
    slot = UserSlot()
    return slot, _SLOT.set(slot)


def close_slot(token: contextvars.Token[UserSlot | None]) -> None:
    """Forget the request's slot."""
    _SLOT.reset(token)


def user_of(
    slot: UserSlot | None, scope: Mapping[str, Any] | MutableMapping[str, Any], sensitive: Sequence[str] = ()
) -> dict[str, str]:
    """The user fields of a request: what ``set_user`` recorded, else ``scope["user"].identity``.

    A field whose name the redaction list matches (``sensitive_fields``) is left out.
    """
    fields = _recorded(slot, scope)
    return {key: value for key, value in fields.items() if not is_sensitive(key, sensitive)}


def _recorded(slot: UserSlot | None, scope: Mapping[str, Any] | MutableMapping[str, Any]) -> dict[str, str]:
    if slot is not None and slot.user_id is not None:
        fields = {USER_ID: slot.user_id}
        if slot.name is not None:
            fields[USER_NAME] = slot.name
        return fields
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    try:
        identity = user.identity
    except (NotImplementedError, AttributeError):  # Starlette's SimpleUser has a name, not an ID
        return {}
    try:
        return {USER_ID: _text(identity, "identity")}
    except (TypeError, ValueError):
        return {}
