"""The circuit breaker, driven by an injected clock; concurrency with 50 threads and 50 tasks."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qm_otel.runtime.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpenError, breakers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom


def ok() -> str:
    return "ok"


def call(breaker: CircuitBreaker, func: Callable[[], object]) -> str:
    try:
        breaker(func)()
    except Boom:
        return "failed"
    except CircuitOpenError:
        return "rejected"
    return "ok"


def transitions(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    return [(r.levelname, r.getMessage(), r.__dict__["status"]) for r in caplog.records if r.name == "qm_otel.breaker"]


def test_the_whole_table_in_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    breaker = CircuitBreaker("t-table", clock=clock)
    assert [call(breaker, fail) for _ in range(3)] == ["failed"] * 3
    assert breaker.state == OPEN
    assert call(breaker, ok) == "rejected"
    clock.now += 29.9
    assert call(breaker, ok) == "rejected"  # not yet 30 s
    clock.now += 0.1
    assert call(breaker, fail) == "failed"  # the trial fails: open again
    assert breaker.state == OPEN
    clock.now += 30
    assert call(breaker, ok) == "ok"  # the next trial succeeds: closed
    assert breaker.state == CLOSED
    assert transitions(caplog) == [
        ("ERROR", "Circuit breaker opened", "FAILURE"),
        ("INFO", "Testing circuit breaker", "INFO"),
        ("WARNING", "Circuit breaker remains open", "DEGRADED"),
        ("INFO", "Testing circuit breaker", "INFO"),
        ("INFO", "Circuit breaker closed", "SUCCESS"),
    ]
    record = next(r for r in caplog.records if r.name == "qm_otel.breaker")
    assert (record.__dict__["breaker"], record.__dict__["from_state"], record.__dict__["to_state"]) == (
        "t-table", "CLOSED", "OPEN")


def test_a_sliding_window_not_consecutive_counting() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t-window", clock=clock)
    call(breaker, fail)
    call(breaker, ok)  # a success in between does not reset the count
    clock.now += 5
    call(breaker, fail)
    assert breaker.state == CLOSED
    call(breaker, fail)  # 3 failures within 10 s
    assert breaker.state == OPEN

    spread = CircuitBreaker("t-spread", clock=clock)
    for _ in range(5):
        call(spread, fail)
        clock.now += 5.1  # never 3 within 10 s
    assert spread.state == CLOSED


def test_open_rejects_without_calling_the_dependency() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t-reject", failure_threshold=1, clock=clock)
    call(breaker, fail)
    calls = []
    assert call(breaker, lambda: calls.append(1)) == "rejected"
    assert calls == []
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert (info.value.breaker, info.value.state) == ("t-reject", OPEN)


def test_only_configured_exceptions_count() -> None:
    breaker = CircuitBreaker("t-kinds", failure_threshold=1, failure_exceptions=(ConnectionError,), clock=Clock())
    with pytest.raises(ValueError, match="not a failure"):
        breaker(lambda: (_ for _ in ()).throw(ValueError("not a failure")))()
    assert breaker.state == CLOSED
    with pytest.raises(ConnectionError):
        breaker(lambda: (_ for _ in ()).throw(ConnectionError()))()
    assert breaker.state == OPEN


def test_context_manager_sync_and_async_and_span_events() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = Clock()
    breaker = CircuitBreaker("t-cm", failure_threshold=2, recovery_s=1, clock=clock)
    with trace.use_span(provider.get_tracer("t").start_span("request"), end_on_exit=True):
        for _ in range(2):
            with pytest.raises(Boom), breaker:
                raise Boom

    async def trial() -> None:
        async with breaker:
            await asyncio.sleep(0)

    clock.now += 1
    asyncio.run(trial())
    assert breaker.state == CLOSED
    [span] = exporter.get_finished_spans()
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("Circuit breaker opened", {"breaker": "t-cm", "from": "CLOSED", "to": "OPEN"})]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold must be >= 1"):
        CircuitBreaker("t-bad", window_s=-1)


def test_breakers_are_listed_for_readiness() -> None:
    breaker = CircuitBreaker("t-listed", required=True)
    assert breaker in breakers()
    assert breaker.report() == {"state": CLOSED, "required": True}


def opened(name: str, clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_s=30, clock=clock)
    call(breaker, fail)
    clock.now += 30
    return breaker


def test_fifty_threads_let_exactly_one_trial_through() -> None:
    clock = Clock()
    breaker = opened("t-threads", clock)
    inside = threading.Event()
    release = threading.Event()
    entered: list[int] = []
    outcomes: list[str] = []
    lock = threading.Lock()

    def dependency() -> None:
        with lock:
            entered.append(1)
        inside.set()
        release.wait(timeout=30)  # hold the trial open while everyone else arrives

    def caller() -> None:
        result = call(breaker, dependency)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for thread in threads:
        thread.start()
    assert inside.wait(timeout=30)
    while sum(o == "rejected" for o in outcomes) < 49:
        threading.Event().wait(0.01)
    assert breaker.state == HALF_OPEN
    release.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()  # no deadlock
    assert len(entered) == 1
    assert sorted(outcomes) == ["ok"] + ["rejected"] * 49
    assert breaker.state == CLOSED


def test_fifty_tasks_let_exactly_one_trial_through() -> None:
    clock = Clock()
    breaker = opened("t-tasks", clock)
    entered: list[int] = []

    async def main() -> list[str]:
        release = asyncio.Event()

        @breaker
        async def dependency() -> None:
            entered.append(1)
            await release.wait()

        async def caller() -> str:
            try:
                await dependency()
            except CircuitOpenError:
                return "rejected"
            return "ok"

        tasks = [asyncio.create_task(caller()) for _ in range(50)]
        while len(entered) < 1 or sum(t.done() for t in tasks) < 49:
            await asyncio.sleep(0.001)
        release.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)

    results = asyncio.run(main())
    assert len(entered) == 1
    assert sorted(results) == ["ok"] + ["rejected"] * 49
    assert breaker.state == CLOSED


def test_the_failure_window_stays_bounded_however_many_calls_fail() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t-bounded", failure_threshold=5, window_s=10, recovery_s=0, clock=clock)
    longest = 0
    for _ in range(10_000):
        call(breaker, fail)
        longest = max(longest, len(breaker._failures))
        clock.now += 0.001
    assert longest <= breaker.failure_threshold


def test_a_sync_call_slower_than_the_call_timeout_is_a_failure() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t-slow", failure_threshold=2, call_timeout_s=1.0, clock=clock)

    def slow() -> str:
        clock.now += 1.5
        return "late"

    assert [call(breaker, slow), call(breaker, slow)] == ["ok", "ok"]  # the result is the caller's to keep ...
    assert breaker.state == OPEN  # ... but the breaker counted both as failures


def test_a_trial_whose_caller_never_returns_is_taken_as_failed() -> None:
    clock = Clock()
    breaker = opened("t-stale", clock)
    breaker.before_call()  # the trial starts and its caller hangs
    assert breaker.state == HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # another caller meanwhile: rejected
    clock.now += breaker.recovery_s + 1  # the trial has had longer than its bound
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # the stale trial counts as failed: OPEN again, a new recovery period
    assert breaker.state == OPEN
    clock.now += breaker.recovery_s
    breaker.before_call()  # a new trial
    breaker.after_call(None)
    assert breaker.state == CLOSED


def test_cancellation_and_keyboard_interrupt_during_a_trial_reopen_the_breaker() -> None:
    clock = Clock()
    breaker = opened("t-cancel", clock)
    for exc in (asyncio.CancelledError(), KeyboardInterrupt()):
        clock.now += breaker.recovery_s
        breaker.before_call()
        breaker.after_call(exc)
        assert breaker.state == OPEN


def test_the_breakers_own_timeout_cancels_an_async_call_and_counts_it() -> None:
    breaker = CircuitBreaker("t-own", failure_threshold=1, call_timeout_s=0.05)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with breaker:
                await asyncio.sleep(30)

    asyncio.run(main())
    assert breaker.state == OPEN


def test_a_bad_call_timeout_is_refused() -> None:
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="call_timeout_s"):
            CircuitBreaker("t-bad-timeout", call_timeout_s=bad)
