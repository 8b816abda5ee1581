"""Issue 25, item 2: the event-loop watchdog, in-process (the real uvicorn runs are in tests/integration)."""

from __future__ import annotations

import asyncio
import os
import re
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.trace import Span, SpanKind

import qm_otel
from qm_otel.runtime import event_loop
from qm_otel.testing import Capture, reset

OFF = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none", "log_format": "none",
       "runtime_metrics": False}
HERE = os.path.abspath(__file__)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("QM_OTEL_EVENT_LOOP_WATCHDOG", "QM_OTEL_EVENT_LOOP_BLOCK_MS"):
        monkeypatch.delenv(name, raising=False)
    reset()
    yield
    reset()


def _watchdog_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == event_loop.THREAD_NAME]


class FakeRequest:
    """What the server middleware registers in ``event_loop.REQUEST``."""

    def __init__(self, span: Span, route: str | None = "/items/{id}") -> None:
        self.span = span
        self.route = route

    def where(self) -> tuple[str, str | None]:
        return f"GET {self.route or '/items/7'}", self.route


def _serve(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on a fresh loop with the watchdog started on it, as the lifespan starts it."""

    async def run() -> None:
        event_loop.ensure_started()
        await asyncio.sleep(0.1)  # a few heartbeats first
        await main()
        await asyncio.sleep(0.2)  # the loop turns: the stall is reported

    asyncio.run(run())


def _records(capture: Capture) -> list[ReadableLogRecord]:
    return [log for log in capture.logs.get_finished_logs() if log.log_record.attributes
            and "event_loop.blocked_ms" in log.log_record.attributes]


def _points(capture: Capture) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = capture.metrics.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name.startswith("qm_otel.event_loop."):
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def _line_of(marker: str) -> int:
    with open(HERE, encoding="utf-8") as source:
        return next(number for number, line in enumerate(source, 1) if marker in line and "_line_of" not in line)


def test_a_blocked_request_gets_one_record_naming_the_line_the_server_span_and_the_route() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, event_loop_block_ms=50, **capture.setup_kwargs())
    tracer = trace.get_tracer("test")
    seen: dict[str, Any] = {}

    async def handler() -> None:
        with qm_otel.correlation("job-42"):
            server = tracer.start_span("GET /items/{id}", kind=SpanKind.SERVER)
            token = event_loop.REQUEST.set(FakeRequest(server))
            try:
                with tracer.start_as_current_span("client call", kind=SpanKind.CLIENT):  # a child is current
                    time.sleep(0.3)  # BLOCKS: unit
            finally:
                event_loop.REQUEST.reset(token)
                server.end()
            seen["server"] = server.get_span_context()

    _serve(handler)
    [record] = _records(capture)
    log = record.log_record
    attributes = dict(log.attributes or {})
    assert log.severity_text == "WARN"
    assert log.trace_id == seen["server"].trace_id
    assert log.span_id == seen["server"].span_id  # the server span, not the client span current then
    assert attributes["correlation_id"] == "job-42"
    assert attributes["http.route"] == "/items/{id}"
    assert attributes["code.file.path"] == HERE
    assert attributes["code.function.name"] == "handler"
    assert attributes["code.line.number"] == _line_of("BLOCKS: unit")
    assert 240 <= attributes["event_loop.blocked_ms"] <= 2000
    assert attributes["event_loop.threshold_ms"] == 50
    stack = str(attributes["code.stacktrace"])
    assert stack.rstrip().endswith("time.sleep(0.3)  # BLOCKS: unit")  # innermost last
    assert str(log.body).startswith("event loop blocked for ")
    assert str(log.body).endswith(f"(threshold 50 ms) in GET /items/{{id}} at test_event_loop.py:"
                                  f"{_line_of('BLOCKS: unit')} in handler")
    [span] = [s for s in capture.spans.get_finished_spans() if s.name == "GET /items/{id}"]
    [event] = [e for e in span.events if e.name == "qm_otel.event_loop.blocked"]
    assert event.attributes is not None
    assert event.attributes["code.line.number"] == _line_of("BLOCKS: unit")
    assert event.attributes["code.function.name"] == "handler"
    assert event.attributes["event_loop.threshold_ms"] == 50
    points = _points(capture)
    [blocked] = points["qm_otel.event_loop.blocked"]
    assert (blocked.value, dict(blocked.attributes)) == (1, {"http.route": "/items/{id}"})
    [lag] = points["qm_otel.event_loop.lag"]
    assert tuple(lag.explicit_bounds) == event_loop.LAG_BUCKETS
    assert lag.count >= 3
    assert lag.max >= 0.24


def test_a_child_task_finds_its_request_and_a_plain_task_is_outside_any_request() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, event_loop_block_ms=50, **capture.setup_kwargs())
    tracer = trace.get_tracer("test")

    def block() -> None:
        time.sleep(0.2)  # BLOCKS: helper

    async def child() -> None:
        block()

    async def handler() -> None:
        server = tracer.start_span("GET /items/{id}", kind=SpanKind.SERVER)
        token = event_loop.REQUEST.set(FakeRequest(server, route=None))
        try:
            await asyncio.create_task(child())  # a copy of the request's context, as anyio's task groups make
        finally:
            event_loop.REQUEST.reset(token)
            server.end()
        await asyncio.sleep(0.1)
        await asyncio.create_task(child())  # no request

    _serve(handler)
    first, second = _records(capture)
    attributes = dict(first.log_record.attributes or {})
    assert "http.route" not in attributes  # not routed: no template, the path in the message
    assert " in GET /items/7 at test_event_loop.py:" in str(first.log_record.body)
    assert attributes["code.function.name"] == "block"
    assert attributes["code.line.number"] == _line_of("BLOCKS: helper")
    assert " outside any request at " in str(second.log_record.body)
    assert not second.log_record.span_id
    blocked = _points(capture)["qm_otel.event_loop.blocked"]
    assert [(point.value, dict(point.attributes)) for point in blocked] == [(2, {})]


def test_a_loop_that_never_blocks_writes_nothing_and_records_its_lag() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())  # the default threshold, 200 ms: callbacks here take 2 ms

    async def busy_but_fine() -> None:
        for _ in range(50):
            await asyncio.sleep(0.005)
            time.sleep(0.002)

    _serve(busy_but_fine)
    assert _records(capture) == []
    points = _points(capture)
    assert "qm_otel.event_loop.blocked" not in points
    assert points["qm_otel.event_loop.lag"][0].count >= 5


def test_a_stall_longer_than_the_cap_is_reported_once_as_still_blocked() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, event_loop_block_ms=20, **capture.setup_kwargs())

    async def long_stall() -> None:
        assert event_loop._ACTIVE is not None
        event_loop._ACTIVE.cap_s = 0.15
        time.sleep(0.5)  # BLOCKS: cap

    _serve(long_stall)
    [record] = _records(capture)
    attributes = dict(record.log_record.attributes or {})
    assert attributes["event_loop.still_blocked"] is True
    assert str(record.log_record.body).startswith("event loop still blocked after ")
    assert 100 <= attributes["event_loop.blocked_ms"] < 450  # the time so far, at the cap
    assert attributes["code.line.number"] == _line_of("BLOCKS: cap")
    assert _points(capture)["qm_otel.event_loop.blocked"][0].value == 1


def test_a_stall_going_on_at_shutdown_is_reported_once_and_no_thread_is_left() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, event_loop_block_ms=20, **capture.setup_kwargs())
    stopped = threading.Event()

    async def blocked_at_shutdown() -> None:
        threading.Timer(0.2, lambda: (qm_otel.shutdown(), stopped.set())).start()
        while not stopped.is_set():
            time.sleep(0.01)  # BLOCKS: shutdown

    _serve(blocked_at_shutdown)
    [record] = _records(capture)
    assert str(record.log_record.body).startswith("event loop still blocked after ")
    assert record.log_record.attributes is not None
    assert record.log_record.attributes["code.line.number"] == _line_of("BLOCKS: shutdown")
    assert _watchdog_threads() == []


def test_shutdown_stops_the_thread_and_the_heartbeat() -> None:
    qm_otel.setup(**OFF, event_loop_block_ms=20)

    async def main() -> None:
        event_loop.ensure_started()
        watchdog = event_loop._ACTIVE
        assert watchdog is not None
        assert len(_watchdog_threads()) == 1
        qm_otel.shutdown()
        assert _watchdog_threads() == []
        assert event_loop._ACTIVE is None
        turns = watchdog._turn
        await asyncio.sleep(0.1)
        assert watchdog._turn <= turns + 1  # the heartbeat does not reschedule itself

    asyncio.run(main())


def test_the_thread_ends_when_its_loop_closes_and_a_new_loop_gets_its_own() -> None:
    qm_otel.setup(**OFF, event_loop_block_ms=20)
    epochs = []

    async def main() -> None:
        epochs.append(event_loop.ensure_started())
        epochs.append(event_loop.ensure_started())  # already watching: nothing changes

    asyncio.run(main())
    assert epochs[0] is epochs[1]
    deadline = time.monotonic() + 5
    while _watchdog_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _watchdog_threads() == []
    assert event_loop._ACTIVE is None
    assert event_loop.epoch is not epochs[0]  # the server middleware's per-request compare sees the change
    asyncio.run(main())
    assert epochs[2] is not epochs[0]
    assert event_loop._ACTIVE is not None


def test_off_starts_no_thread_and_makes_no_metrics() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, event_loop_watchdog=False, event_loop_block_ms=20, **capture.setup_kwargs())
    before = event_loop.epoch

    async def main() -> None:
        assert event_loop.ensure_started() is before
        assert _watchdog_threads() == []
        time.sleep(0.1)

    asyncio.run(main())
    assert event_loop._ACTIVE is None
    assert _points(capture) == {}
    assert _records(capture) == []


def test_the_default_threshold_is_the_response_time_bands_warning_edge() -> None:
    qm_otel.setup(**OFF)

    async def main() -> None:
        event_loop.ensure_started()
        assert event_loop._ACTIVE is not None
        assert event_loop._ACTIVE.threshold_s == pytest.approx(0.2)
        assert event_loop._ACTIVE.interval_s == pytest.approx(0.05)

    asyncio.run(main())


def test_the_blocking_frame_is_the_innermost_of_application_code() -> None:
    import json

    assert event_loop.is_application(HERE)
    assert not event_loop.is_application(json.__file__)
    assert not event_loop.is_application(pytest.__file__)
    assert not event_loop.is_application(event_loop.__file__)
    assert not event_loop.is_application("<frozen importlib._bootstrap>")
    assert not event_loop.is_application(os.path.join(sysconfig.get_paths()["scripts"], "uvicorn"))
    stack = traceback.StackSummary.from_list([
        (pytest.__file__, 1, "main", None), (HERE, 10, "handler", None), (HERE, 20, "helper", None),
        (json.__file__, 30, "dumps", None), (event_loop.__file__, 40, "wrap", None)])
    frame = event_loop.blocking_frame(stack)
    assert frame is not None
    assert (frame.lineno, frame.name) == (20, "helper")
    only_libraries = traceback.StackSummary.from_list([(pytest.__file__, 1, "main", None),
                                                       (json.__file__, 30, "dumps", None)])
    frame = event_loop.blocking_frame(only_libraries)
    assert frame is not None
    assert frame.name == "dumps"  # none of the application's: the innermost
    installed = traceback.StackSummary.from_list([  # an application installed in site-packages
        (pytest.__file__, 1, "main", None), (pytest.__file__, 10, "handler", None),
        (pytest.__file__, 20, "helper", None), (json.__file__, 30, "dumps", None)])
    frame = event_loop.blocking_frame(installed, [True, True, False, False])
    assert frame is not None
    assert frame.name == "handler"  # the innermost coroutine: the async def that made the blocking call


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_after_fork_the_child_forgets_the_parents_watchdog() -> None:
    qm_otel.setup(**OFF, event_loop_block_ms=20)
    ready, done = threading.Event(), threading.Event()
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(lambda: (event_loop.ensure_started(), ready.set()))
        loop.run_until_complete(asyncio.to_thread(done.wait))

    server = threading.Thread(target=serve)
    server.start()
    try:
        assert ready.wait(5)
        parent = event_loop._ACTIVE
        assert parent is not None
        parent_epoch = event_loop.epoch
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it sees, and leave without running pytest's teardown
            os.close(read)
            verdict = (event_loop._ACTIVE is None and event_loop.epoch is not parent_epoch
                       and parent._stopped and not _watchdog_threads() and not event_loop._LOCK.locked())
            os.write(write, b"ok" if verdict else b"bad")
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as answer:
            assert answer.read() == b"ok"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert event_loop._ACTIVE is parent  # the parent's goes on
        assert len(_watchdog_threads()) == 1
    finally:
        done.set()
        server.join(5)
        loop.close()


def test_the_prometheus_names() -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, generate_latest

    reader = PrometheusMetricReader()
    try:
        qm_otel.setup(**OFF, event_loop_block_ms=20, metric_readers=[reader])
        tracer = trace.get_tracer("test")

        async def handler() -> None:
            server = tracer.start_span("GET /items/{id}", kind=SpanKind.SERVER)
            token = event_loop.REQUEST.set(FakeRequest(server))
            time.sleep(0.15)
            event_loop.REQUEST.reset(token)
            server.end()

        _serve(handler)
        text = generate_latest(REGISTRY).decode()
    finally:
        reset()  # the reader's shutdown takes its collector out of the registry
    bounds = re.findall(r'^qm_otel_event_loop_lag_seconds_bucket\{.*le="([^"]+)".*\}', text, re.MULTILINE)
    assert bounds == [*(str(float(b)) for b in event_loop.LAG_BUCKETS), "+Inf"]
    [blocked] = re.findall(r"^qm_otel_event_loop_blocked_total\{(.*)\} (.*)$", text, re.MULTILINE)
    assert 'http_route="/items/{id}"' in blocked[0]
    assert blocked[1] == "1.0"
