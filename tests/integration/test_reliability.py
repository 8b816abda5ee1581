"""Issue 12 against real processes: hanging dependencies, a hung check, a full disk, a collector that fails."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Iterator

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

APP = "tests.integration.apps.reliability:app"


@pytest.fixture
def service(receiver: OtlpReceiver) -> Iterator[svc.Service]:
    running = svc.start(APP, svc.base_env(receiver.endpoint))
    yield running
    running.terminate()


# --- 1. a hanging dependency opens the breaker -------------------------------------------------


@pytest.mark.parametrize("mode", ["wait_for", "timeout", "own"])
def test_calls_cut_off_by_a_timeout_open_the_breaker_and_a_cancelled_trial_reopens_it(
    service: svc.Service, mode: str
) -> None:
    assert [service.get(f"/hang/{mode}").status_code for _ in range(3)] == [504, 504, 504]
    assert service.get("/breakers").json()[mode] == "OPEN"
    started = time.monotonic()
    assert service.get(f"/hang/{mode}").status_code == 503  # rejected at once, the dependency not called
    assert time.monotonic() - started < 0.1 + 0.5  # well under the dependency's timeout plus a round trip
    time.sleep(0.6)  # recovery_s: the next call is the HALF_OPEN trial, and it times out too
    assert service.get(f"/hang/{mode}").status_code == 504
    assert service.get("/breakers").json()[mode] == "OPEN"  # re-opened, not closed by the cancellation
    assert service.get(f"/hang/{mode}").status_code == 503


# --- 2. a hung readiness check holds one thread and never the application's executor -----------


def test_a_hung_check_holds_one_thread_and_the_application_keeps_its_executor(service: svc.Service) -> None:
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        probes = list(pool.map(lambda _: service.get("/readyz"), range(30)))
    for probe in probes:
        report = probe.json()["checks"]["stuck"]
        assert (report["status"], report["error"]) == ("down", "no answer within 0.3s")
        assert report["latency_ms"] < 300 + 500  # each probe waits the check's timeout, no longer
    assert service.get("/threads").json() == {"checks": 1}
    # asyncio's default executor is free for the application: its own thread work still answers
    assert all(service.get("/work").json() == {"answer": 42} for _ in range(40))
    started = time.monotonic()
    assert service.terminate(timeout_s=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    assert time.monotonic() - started < 5  # shutdown does not wait for the hung check's thread
