"""The request is read once: headers decoded once (lines joined), query redacted once, context extracted once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qm_otel.integrations import scope
from qm_otel.integrations.correlation_middleware import CorrelationMiddleware
from qm_otel.integrations.request_log import RequestLog
from qm_otel.integrations.scope import RequestView, view_of
from qm_otel.integrations.server import ServerTelemetryMiddleware

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)


@given(lines=st.lists(st.tuples(st.sampled_from([b"Tracestate", b"tracestate", b"x-correlation-id", b"accept"]),
                                HEADER_TEXT.map(lambda t: t.encode("latin-1"))), max_size=8))
def test_repeated_lines_are_one_comma_joined_field_and_the_first_line_is_kept(
    lines: list[tuple[bytes, bytes]],
) -> None:
    view = RequestView(lines, b"")
    for name in {n.lower().decode() for n, _ in lines}:
        values = [v.decode("latin-1") for n, v in lines if n.lower().decode() == name]
        assert view.first[name] == values[0]
        members = [v for v in values if v.strip()]
        assert view.headers[name] == (",".join(members) if members else values[0])
        assert (name in view.repeated) is (len(values) > 1)


def test_the_tracestate_lines_reach_the_parent_context_together() -> None:
    lines = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
             (b"tracestate", b"foo=1,bar=2"), (b"tracestate", b""), (b"tracestate", b"rojo=1,congo=2"),
             (b"tracestate", b"baz=3")]
    view = RequestView(lines, b"")
    from opentelemetry import trace

    state = trace.get_current_span(view.parent()).get_span_context().trace_state
    assert list(state.keys()) == ["foo", "bar", "rojo", "congo", "baz"]


def _handed(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], Any, list[tuple[bytes, bytes]]]:
    """The header lines the app behind the correlation middleware is handed, what the contrib getter extracts."""
    from opentelemetry.instrumentation.asgi import asgi_getter

    seen: dict[str, Any] = {}

    async def app(scope_: dict[str, Any], receive: Any, send: Any) -> None:
        del receive, send
        seen["headers"] = scope_["headers"]
        seen["context"] = propagate.extract(scope_, getter=asgi_getter)

    async def ignore(*args: Any) -> Any:
        del args

    asyncio.run(CorrelationMiddleware(app)({"type": "http", "headers": headers}, ignore, ignore))
    return seen["headers"], seen["context"], headers


def test_the_app_and_a_contrib_getter_are_handed_each_trace_header_combined() -> None:
    from opentelemetry import baggage, trace

    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    handed, context, _ = _handed([(b"baggage", b"user=alice"), (b"x-a", b"1"), (b"tracestate", b"foo=1"),
                                  (b"traceparent", traceparent), (b"Baggage", b""), (b"x-a", b"2"),
                                  (b"tracestate", b"bar=2"), (b"baggage", b"tier=gold")])
    assert handed == [(b"baggage", b"user=alice,tier=gold"), (b"x-a", b"1"), (b"tracestate", b"foo=1,bar=2"),
                      (b"traceparent", traceparent), (b"x-a", b"2")]  # other fields' lines as they came
    assert baggage.get_all(context) == {"user": "alice", "tier": "gold"}
    assert list(trace.get_current_span(context).get_span_context().trace_state.keys()) == ["foo", "bar"]


def test_single_lines_reach_the_app_untouched() -> None:
    handed, _, sent = _handed([(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                               (b"tracestate", b"foo=1"), (b"accept", b"a"), (b"accept", b"b")])
    assert handed is sent  # nothing copied when no trace header is repeated


class _Route:
    path = "/items/{item_id}"


def _stack(request_log_writer: Any) -> tuple[Any, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    async def app(scope_: dict[str, Any], receive: Any, send: Any) -> None:
        del receive
        scope_["route"] = _Route()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    server = ServerTelemetryMiddleware(app, tracer_provider=tracer_provider, meter_provider=meter_provider,
                                       sensitive_fields=["token"], request_log=request_log_writer)
    return CorrelationMiddleware(server), spans


def _request(stack: Any) -> None:
    http_scope = {"type": "http", "method": "GET", "path": "/items/7", "query_string": b"token=s3cret&page=2",
                  "scheme": "http", "http_version": "1.1", "client": ("10.0.0.9", 5123), "server": ("svc", 8000),
                  "headers": [(b"host", b"svc:8000"), (b"traceparent",
                                                       b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                              (b"x-correlation-id", b"order-1001"), (b"user-agent", b"curl/8")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        del message

    asyncio.run(stack(http_scope, receive, send))


def test_one_request_decodes_redacts_and_extracts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"views": 0, "redact": 0, "extract": 0}
    made, redact, extract = RequestView.__init__, scope.redact_query, propagate.extract

    def counting_view(self: RequestView, *args: Any) -> None:
        calls["views"] += 1
        made(self, *args)

    def counting_redact(*args: Any) -> str:
        calls["redact"] += 1
        return redact(*args)

    def counting_extract(*args: Any, **kwargs: Any) -> Any:
        calls["extract"] += 1
        return extract(*args, **kwargs)

    monkeypatch.setattr(RequestView, "__init__", counting_view)
    monkeypatch.setattr(scope, "redact_query", counting_redact)
    monkeypatch.setattr(propagate, "extract", counting_extract)
    logged: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record)

    requests = logging.getLogger("qm_otel.requests")
    keep = Keep()
    requests.addHandler(keep)
    requests.setLevel(logging.INFO)
    try:
        stack, spans = _stack(RequestLog(sensitive=("token",)))
        _request(stack)
    finally:
        requests.removeHandler(keep)
        requests.setLevel(logging.NOTSET)
    assert calls == {"views": 1, "redact": 1, "extract": 1}
    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["url.query"] == "token=REDACTED&page=2"
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # the traceparent won
    [record] = logged
    assert record.__dict__["query"] == "token=REDACTED&page=2"


def test_a_view_left_by_another_app_is_not_reused() -> None:
    stale = RequestView([(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")], b"")
    stack, spans = _stack(None)

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            del message

        await stack({"type": "http", "method": "GET", "path": "/items/7", "headers": [], "qm_otel": stale},
                    receive, send)

    asyncio.run(run())
    [span] = spans.get_finished_spans()
    assert span.parent is None  # the stale view's parent was not used


def test_view_of_makes_the_view_once() -> None:
    http_scope: dict[str, Any] = {"type": "http", "headers": [(b"Host", b"svc")], "query_string": b"a=1"}
    assert view_of(http_scope) is view_of(http_scope)
    assert view_of(http_scope).headers == {"host": "svc"}


@given(path=st.text(alphabet="/abcdhz0123456789.-", max_size=16), host=st.sampled_from(["svc", "svc:8000", ""]))
def test_exclusions_answer_as_the_exclude_list_does(path: str, host: str) -> None:
    from opentelemetry.util.http import ExcludeList

    from qm_otel.integrations.scope import Exclusions, request_url

    patterns = ["/healthz$", "/readyz$", "^https?://[^/]+/metrics"]
    exclusions = Exclusions(patterns)
    http_scope: dict[str, Any] = {"type": "http", "scheme": "http", "path": path, "server": ("10.0.0.1", 8000),
                                  "headers": [(b"host", host.encode())] if host else []}
    view = view_of(http_scope)
    expected = bool(ExcludeList(patterns).url_disabled(request_url(http_scope, view.first)))
    assert exclusions.excluded(http_scope, view) is expected
    assert exclusions.excluded(http_scope, view) is expected  # the remembered answer
    assert Exclusions([]).excluded(http_scope, view) is False
