"""The correlation rules as pure functions, and the middleware on its own (no global OTel state)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qm_otel.core.correlation import (
    Correlation,
    CorrelationIdGenerator,
    CorrelationPropagator,
    activate,
    correlation_id,
    deactivate,
    parse,
    rejection_reason,
    resolve,
    trace_id_for,
)
from qm_otel.integrations.correlation_middleware import CorrelationMiddleware

ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@pytest.mark.parametrize(
    ("value", "trace_id"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", 0x4BF92F3577B34DA6A3CE929D0E0E4736),
        ("4BF92F3577B34DA6A3CE929D0E0E4736", 0x4BF92F3577B34DA6A3CE929D0E0E4736),
        ("6f9619ff-8b86-d011-b42d-00cf4fc964ff", 0x6F9619FF8B86D011B42D00CF4FC964FF),
        ("6F9619FF8B86D011B42D00CF4FC964FF", 0x6F9619FF8B86D011B42D00CF4FC964FF),
        ("00000000000000000000000000000001", 1),
    ],
)
def test_hex_and_uuid_ids_are_the_trace_id(value: str, trace_id: int) -> None:
    assert parse(value) == value
    assert trace_id_for(value) == trace_id


@pytest.mark.parametrize("version", [1, 3, 4, 5, 7, 8])
def test_uuids_of_every_version_with_or_without_dashes(version: int) -> None:
    raw = 0x0123456789ABCDEF0123456789ABCDEF
    raw = (raw & ~(0xF << 76)) | (version << 76)  # Python 3.11's uuid module refuses versions 6-8
    value = uuid.UUID(int=(raw & ~(0x3 << 62)) | (0x2 << 62))
    assert trace_id_for(str(value)) == value.int
    assert trace_id_for(value.hex) == value.int


@pytest.mark.parametrize("value", ["job-42", "order:2024.11.23", "a", "x" * 128, "0123", "6f9619ff-8b86-d011"])
def test_other_accepted_ids_map_through_sha256(value: str) -> None:
    assert parse(value) == value
    assert trace_id_for(value) == int.from_bytes(hashlib.sha256(value.encode()).digest()[:16], "big")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        (None, "empty"),
        ("x" * 129, "too_long"),
        ("has space", "characters"),
        ("crlf\r\nX-Evil: 1", "characters"),
        ("tab\t", "characters"),
        ("naïve", "characters"),
        ("semi;colon", "characters"),
        ("00000000000000000000000000000000", "zero"),
        ("00000000-0000-0000-0000-000000000000", "zero"),
        (b"\xff\xfe", "characters"),
    ],
)
def test_rejected_ids_and_their_reason(value: str | bytes | None, reason: str) -> None:
    assert rejection_reason(value) == reason
    assert parse(value) is None


@given(st.binary(max_size=200))
def test_any_bytes_are_either_accepted_by_the_rule_or_rejected(raw: bytes) -> None:
    accepted = parse(raw)
    if accepted is None:
        assert rejection_reason(raw) is not None
        replaced = resolve(raw, "test")
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.id)
        assert replaced.trace_id == int(replaced.id, 16) != 0
    else:
        assert ACCEPTED.fullmatch(accepted)
        assert 0 < trace_id_for(accepted) < 2**128


@given(st.text(max_size=200))
def test_any_text_follows_the_acceptance_rule(value: str) -> None:
    zero = re.fullmatch(r"0{32}|0{8}-0{4}-0{4}-0{4}-0{12}", value) is not None
    assert (parse(value) is not None) == (bool(ACCEPTED.fullmatch(value)) and not zero)


def test_the_id_generator_hands_the_trace_id_to_one_root_span_only() -> None:
    generator = CorrelationIdGenerator()
    token = activate(Correlation("job-42", 42, 42))
    try:
        assert generator.generate_trace_id() == 42
        assert generator.generate_trace_id() != 42
        assert correlation_id() == "job-42"
    finally:
        deactivate(token)
    assert correlation_id() is None


def test_the_propagator_writes_the_header_only_inside_a_correlation() -> None:
    carrier: dict[str, str] = {}
    CorrelationPropagator().inject(carrier)
    assert carrier == {}
    token = activate(Correlation("order-7", 1))
    try:
        CorrelationPropagator().inject(carrier)
    finally:
        deactivate(token)
    assert carrier == {"X-Correlation-ID": "order-7"}


async def _call(middleware: CorrelationMiddleware, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["inner"] = correlation_id()
        seen["headers"] = scope["headers"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-correlation-id", b"stale")]})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["response"] = [v for n, v in message["headers"] if n == b"x-correlation-id"]

    await CorrelationMiddleware(app, trust_incoming=middleware._trust_incoming)(
        {"type": "http", "headers": headers}, receive, send
    )
    seen["after"] = correlation_id()
    return seen


@given(st.binary(max_size=300))
def test_middleware_answers_with_one_valid_id_for_any_header_bytes(raw: bytes) -> None:
    seen = asyncio.run(_call(CorrelationMiddleware(None), [(b"x-correlation-id", raw)]))  # type: ignore[arg-type]
    assert len(seen["response"]) == 1
    answered = seen["response"][0].decode("ascii")
    assert parse(answered) == answered
    assert seen["inner"] == answered
    assert seen["after"] is None  # the context variable is reset
    if parse(raw) is None:
        assert answered.encode() != raw


def test_priority_and_untrusted_edges() -> None:
    both = [(b"x-request-id", b"req-1"), (b"x-correlation-id", b"corr-1")]
    assert asyncio.run(_call(CorrelationMiddleware(None), both))["response"] == [b"corr-1"]  # type: ignore[arg-type]
    only_request = [(b"X-Request-ID", b"req-1")]
    assert asyncio.run(_call(CorrelationMiddleware(None), only_request))["response"] == [b"req-1"]  # type: ignore[arg-type]
    edge = CorrelationMiddleware(None, trust_incoming=False)  # type: ignore[arg-type]
    headers = [(b"x-correlation-id", b"corr-1"), (b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
    seen = asyncio.run(_call(edge, headers))
    assert seen["response"] != [b"corr-1"]
    assert all(name != b"traceparent" for name, _ in seen["headers"])
