"""``set_user`` and where a request's user comes from."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from qm_otel.runtime.users import close_slot, open_slot, set_user, user_of


class StarletteUser:
    def __init__(self, identity: Any, authenticated: bool = True) -> None:
        self._identity, self.is_authenticated, self.display_name = identity, authenticated, "Grace Hopper"

    @property
    def identity(self) -> Any:
        if self._identity is NotImplemented:
            raise NotImplementedError
        return self._identity


def test_set_user_fills_the_requests_slot_and_tags_the_span() -> None:
    tracer = TracerProvider().get_tracer("t")
    slot, token = open_slot()
    try:
        with tracer.start_as_current_span("request") as span:
            set_user(17)
        assert user_of(slot, {}) == {"user.id": "17"}
        assert span.attributes["user.id"] == "17"  # type: ignore[attr-defined]
        assert "user.name" not in span.attributes  # type: ignore[attr-defined]
        set_user("u-17", name="Ada")
        assert user_of(slot, {}) == {"user.id": "u-17", "user.name": "Ada"}
    finally:
        close_slot(token)


def test_scope_user_gives_its_identity_never_its_name() -> None:
    assert user_of(None, {"user": StarletteUser("u-99")}) == {"user.id": "u-99"}
    assert user_of(None, {"user": StarletteUser("u-99", authenticated=False)}) == {}
    assert user_of(None, {"user": StarletteUser(NotImplemented)}) == {}  # SimpleUser: a name, no ID
    assert user_of(None, {}) == {}


def test_the_redaction_list_applies() -> None:
    slot, token = open_slot()
    try:
        set_user("u-1", name="Ada")
        assert user_of(slot, {}, sensitive=("name",)) == {"user.id": "u-1"}
    finally:
        close_slot(token)


@pytest.mark.parametrize("bad", [None, 1.5, True, "", "  ", "a\nb", b"u-1"])
def test_a_bad_user_id_is_a_clear_error(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"qm_otel\.set_user: user_id"):
        set_user(bad)


def test_long_values_are_capped() -> None:
    slot, token = open_slot()
    try:
        set_user("u" * 1000)
        assert len(user_of(slot, {})["user.id"]) == 256
    finally:
        close_slot(token)
