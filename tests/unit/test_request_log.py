"""The request log on its own: one record per request, levels, skipped health checks, redacted queries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from qm_otel.core.conventions import classify
from qm_otel.integrations.request_log import RequestLogMiddleware


def run(middleware: RequestLogMiddleware, path: str = "/orders/7", query: bytes = b"token=s3cret") -> None:
    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            del message

        scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "scheme": "http",
                 "headers": [(b"host", b"svc:8000"), (b"authorization", b"Bearer s3cret")],
                 "client": ("10.0.0.9", 51234)}
        await middleware(scope, receive, send)

    asyncio.run(main())


def app(status: int, delay_s: float = 0.0, fail: bool = False) -> Any:
    class Route:
        path = "/orders/{order_id}"

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        del receive
        scope["route"] = Route()
        await asyncio.sleep(delay_s)
        if fail:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    return asgi


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "qm_otel.requests"]


def test_one_record_with_route_status_duration_and_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run(RequestLogMiddleware(app(200)))
    [record] = records(caplog)
    assert record.levelname == "INFO"
    assert record.getMessage().startswith("GET /orders/{order_id} 200 ")
    fields = record.__dict__
    assert (fields["http_method"], fields["http_route"], fields["http_status_code"]) == (
        "GET", "/orders/{order_id}", 200)
    assert fields["client_address"] == "10.0.0.9:51234"
    assert (fields["component"], fields["status"], fields["event"]) == ("API", "SUCCESS", "http_request")
    assert fields["duration_ms"] >= 0
    assert fields["band"] == classify("response_time", fields["duration_ms"]).band
    assert "s3cret" not in repr(fields) + record.getMessage()
    assert fields["query"] == "token=REDACTED"


def test_slow_requests_are_warnings_and_server_errors_are_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run(RequestLogMiddleware(app(200, delay_s=0.05), slow_ms=10))  # the threshold is data; 2 s by default
    run(RequestLogMiddleware(app(503)))
    with pytest.raises(RuntimeError):
        run(RequestLogMiddleware(app(200, fail=True)))
    levels = [(r.levelname, r.__dict__["http_status_code"], r.__dict__["status"]) for r in records(caplog)]
    assert levels == [("WARNING", 200, "SUCCESS"), ("ERROR", 503, "FAILURE"), ("ERROR", 500, "FAILURE")]
    assert records(caplog)[0].__dict__["band"] != "optimal"  # it slept 50 ms: at least acceptable


def test_excluded_health_endpoints_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    middleware = RequestLogMiddleware(app(200), excluded=(r"^https?://[^/]+/healthz$",))
    run(middleware, path="/healthz")
    run(middleware, path="/healthz/deep")
    assert [r.__dict__["http_status_code"] for r in records(caplog)] == [200]
