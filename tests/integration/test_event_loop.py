"""Issue 25, item 2: the event-loop watchdog on real uvicorn, by both launch paths, with a real OTLP receiver.

Handlers block the loop with ``time.sleep``, a synchronous ``httpx.get`` to a slow second server and a
CPU loop: each stall is one WARNING record naming the handler's line, with the blocked request's
trace, correlation ID and route, a span event on its server span and one count; a burst of requests
that never block writes no record; a 2 s stall is one record.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import service
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

APP = Path(service.ROOT, "tests/integration/apps/blocking.py")
LAUNCHES = {
    "setup": ("tests.integration.apps.blocking_setup:app", False),
    "opentelemetry-instrument": ("tests.integration.apps.blocking:app", True),
}
LAG_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10]


def line_of(marker: str) -> int:
    """The line of the test app that carries ``# BLOCKS: <marker>``."""
    lines = APP.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.rstrip().endswith(f"# BLOCKS: {marker}"))


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A second tiny server that answers after 0.5 s: the target of the handler's synchronous ``httpx.get``."""

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(0.5)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("launch", list(LAUNCHES))
def test_each_stall_is_one_record_naming_the_blocking_line_and_the_blocked_request(
    launch: str, receiver: OtlpReceiver, slow_server: str
) -> None:
    app, zero_code = LAUNCHES[launch]
    env = service.base_env(receiver.endpoint, QM_OTEL_EVENT_LOOP_BLOCK_MS="100")
    with service.start(app, env, zero_code=zero_code) as svc:
        # a burst of requests that never block the loop
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda n: svc.get(f"/fine/{n}").status_code, range(64)))
        assert statuses == [200] * 64
        assert svc.get("/threads").json().count("qm-otel-event-loop") == 1  # one watchdog per process
        # one stall of each kind, each request with its own correlation ID (32 hex digits: the trace ID)
        calls = {
            "sleep": ("/sleep", "/sleep", "sleeps"),
            "sync-http": (f"/sync-http?url={slow_server}", "/sync-http", "sync_http"),
            "cpu": ("/cpu", "/cpu", "spin"),
            "stall": ("/stall/2", "/stall/{seconds}", "stall"),
        }
        ids = {}
        for marker, (path, _, _) in calls.items():
            ids[marker] = uuid.uuid4().hex
            response = svc.get(path, headers={"X-Correlation-ID": ids[marker]})
            assert response.status_code == 200
            assert response.headers["x-correlation-id"] == ids[marker]

        def all_arrived(r: OtlpReceiver) -> bool:
            spans, logs, points = r.snapshot()
            warned = {log.trace_id for log in logs if log.attributes.get("event_loop.blocked_ms") is not None}
            served = {s.trace_id for s in spans if s.kind == 2}
            counted = {p.attributes.get("http.route") for p in points if p.name == "qm_otel.event_loop.blocked"}
            return (set(ids.values()) <= warned and set(ids.values()) <= served
                    and {route for _, route, _ in calls.values()} <= counted)

        receiver.wait_for(all_arrived, timeout_s=30)

    spans, logs, points = receiver.snapshot()
    records = [log for log in logs if log.attributes.get("event_loop.blocked_ms") is not None]
    assert len(records) == len(calls), [r.body for r in records]  # one per stall; none for the burst
    lines = [json.loads(line) for line in svc.lines if '"qm_otel.event_loop"' in line]
    assert len(lines) == len(calls)
    for marker, (_, route, function) in calls.items():
        trace_id = ids[marker]
        [server] = [s for s in spans if s.kind == 2 and s.trace_id == trace_id]
        [record] = [r for r in records if r.trace_id == trace_id]
        assert record.span_id == server.span_id  # the server span's, not the httpx client span current then
        assert record.severity_text == "WARN"
        attrs = record.attributes
        assert attrs["correlation_id"] == trace_id
        assert attrs["http.route"] == route
        assert attrs["code.file.path"] == str(APP)
        assert attrs["code.function.name"] == function
        assert attrs["code.line.number"] == line_of(marker)
        assert attrs["event_loop.threshold_ms"] == 100
        expected_ms = 2000 if marker == "stall" else 500
        assert 0.8 * expected_ms <= attrs["event_loop.blocked_ms"] <= expected_ms + 1500
        stack = attrs["code.stacktrace"]
        assert f"# BLOCKS: {marker}" in stack
        innermost = stack.rstrip().splitlines()[-1]  # innermost last: the handler's line, or httpx's socket read
        assert innermost.endswith(f"# BLOCKS: {marker}") if marker != "sync-http" else "recv" in innermost
        method_route = f"GET {route}"
        assert record.body.startswith("event loop blocked for ")
        assert record.body.endswith(f"(threshold 100 ms) in {method_route} at blocking.py:{line_of(marker)} "
                                    f"in {function}")
        # the JSON line on stdout: the same record, its code location the blocking line
        [line] = [entry for entry in lines if entry["trace_id"] == trace_id]
        assert (line["level"], line["span_id"], line["correlation_id"]) == ("WARNING", server.span_id, trace_id)
        assert (line["module"], line["function"], line["line"]) == ("blocking", function, line_of(marker))
        assert line["http.route"] == route
        # the span event on the blocked request's server span
        [event] = [attrs for name, attrs in server.events if name == "qm_otel.event_loop.blocked"]
        assert event["code.line.number"] == line_of(marker)
        assert event["code.function.name"] == function
        assert event["event_loop.threshold_ms"] == 100
        assert event["code.stacktrace"] == stack
    # counted once per stall, by route; the lag histogram's points arrive with their buckets
    blocked = {p.attributes["http.route"]: p.value for p in points if p.name == "qm_otel.event_loop.blocked"}
    assert blocked == {route: 1 for _, route, _ in calls.values()}
    lag = [p for p in points if p.name == "qm_otel.event_loop.lag"]
    assert lag
    assert {(p.unit, p.scope, p.kind) for p in lag} == {("s", "qm_otel", "histogram")}
    assert max(p.count or 0 for p in lag) >= 10
    assert all(p.bounds == LAG_BUCKETS for p in lag)
    assert any(p.bounds for p in points if p.name == "http.server.request.duration")  # the fast ones beside it
    assert not [line for line in svc.stderr_text.splitlines() if "Traceback" in line]



def test_off_starts_no_thread_and_makes_no_record_or_metric(receiver: OtlpReceiver) -> None:
    env = service.base_env(receiver.endpoint, QM_OTEL_EVENT_LOOP_BLOCK_MS="100",
                           QM_OTEL_EVENT_LOOP_WATCHDOG="false")
    with service.start("tests.integration.apps.blocking_setup:app", env) as svc:
        assert "qm-otel-event-loop" not in svc.get("/threads").json()
        assert svc.get("/sleep").status_code == 200
        receiver.wait_for(lambda r: any(p.name == "http.server.request.duration" and p.attributes.get(
            "http.route") == "/sleep" for p in r.snapshot()[2]), timeout_s=30)
    _, logs, points = receiver.snapshot()
    assert not [log for log in logs if log.attributes.get("event_loop.blocked_ms") is not None]
    assert not [p for p in points if p.name.startswith("qm_otel.event_loop.")]
    assert not [line for line in svc.lines if "qm_otel.event_loop" in line]
