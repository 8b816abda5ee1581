"""Breakers against a real flaky HTTP dependency, readiness, degraded mode and the standard metrics."""

from __future__ import annotations

import time

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

APP = "tests.integration.apps.resilience:app"


def messages(receiver: OtlpReceiver, logger_event_prefix: str = "circuit_breaker_") -> list[tuple[str, str]]:
    return [(g.severity_text, str(g.body)) for g in receiver.snapshot()[1]
            if str(g.attributes.get("event", "")).startswith(logger_event_prefix)]


@pytest.fixture
def service(receiver: OtlpReceiver) -> svc.Service:
    with svc.start(APP, svc.base_env(receiver.endpoint)) as running:
        yield running


def test_breaker_sequence_against_a_real_flaky_dependency(service: svc.Service, receiver: OtlpReceiver) -> None:
    assert service.get("/pay").status_code == 200
    assert svc.httpx.post(f"{service.url}/switch", params={"up": "false"}).status_code == 200
    assert [service.get("/pay").status_code for _ in range(3)] == [502, 502, 502]
    calls_before = svc.httpx.post(f"{service.url}/switch").json()["calls"]
    rejected = service.get("/pay")
    assert rejected.status_code == 503  # rejected at once ...
    assert svc.httpx.post(f"{service.url}/switch").json()["calls"] == calls_before  # ... the dependency untouched
    ready = service.get("/readyz")
    assert ready.status_code == 503  # a required breaker is open
    assert ready.json()["breakers"]["payments"] == {"state": "OPEN", "required": True}
    time.sleep(0.6)  # the breaker's recovery time (0.5 s): the next call is the trial
    assert service.get("/pay").status_code == 502  # the trial fails: remains open
    time.sleep(0.6)
    svc.httpx.post(f"{service.url}/switch", params={"up": "true"})
    assert service.get("/pay").status_code == 200  # the trial succeeds: closed
    assert service.get("/readyz").json()["breakers"]["payments"]["state"] == "CLOSED"
    receiver.wait_for(lambda r: len(messages(r)) >= 5)
    assert messages(receiver) == [
        ("ERROR", "Circuit breaker opened"),
        ("INFO", "Testing circuit breaker"),
        ("WARN", "Circuit breaker remains open"),
        ("INFO", "Testing circuit breaker"),
        ("INFO", "Circuit breaker closed"),
    ]
    receiver.wait_for(lambda r: any(p.name == "qm_otel.breaker.transitions" for p in r.snapshot()[2]))
    receiver.wait_for(lambda r: any(p.name == "qm_otel.breaker.calls" and p.attributes.get("outcome") == "rejected"
                                    for p in r.snapshot()[2]))
    states = {(p.attributes["state"], p.value) for p in receiver.snapshot()[2]
              if p.name == "qm_otel.breaker.state" and p.attributes.get("breaker") == "payments"}
    assert {state for state, _ in states} == {"CLOSED", "OPEN", "HALF_OPEN"}  # one series per state


def test_liveness_readiness_and_what_they_report(service: svc.Service, receiver: OtlpReceiver) -> None:
    live = service.get("/healthz")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = service.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "up"
    search = body["checks"]["search"]
    assert (search["status"], search["required"], search["error"]) == ("down", False, "returned False")
    assert search["latency_ms"] >= 0
    assert body["degraded"] is False
    svc.httpx.post(f"{service.url}/switch", params={"db_up": "false"})
    down = service.get("/readyz")
    assert down.status_code == 503
    assert down.json()["checks"]["database"]["status"] == "down"
    assert service.get("/pay").status_code == 200
    receiver.wait_for(lambda r: any(s.name == "GET /pay" for s in r.snapshot()[0]))
    spans, logs, _ = receiver.snapshot()
    assert not [s for s in spans if s.name.startswith(("GET /healthz", "GET /readyz"))]
    assert not [g for g in logs if g.attributes.get("event") == "http_request"
                and g.attributes.get("http_route") in ("/healthz", "/readyz")]


def test_degraded_mode_from_the_cache_hit_rate(service: svc.Service, receiver: OtlpReceiver) -> None:
    for n in range(30):
        service.get(f"/lookup/{n}", params={"hit": "true" if n % 4 == 0 else "false"})  # 25 % hits
    body = service.get("/readyz").json()
    assert body["degraded"] is True
    assert body["degraded_caches"] == ["profiles"]
    receiver.wait_for(lambda r: any(str(g.body) == "Entering degraded mode" for g in r.snapshot()[1]))
    entering = next(g for g in receiver.snapshot()[1] if str(g.body) == "Entering degraded mode")
    assert entering.severity_text == "WARN"
    assert entering.attributes["cache"] == "profiles"
    receiver.wait_for(lambda r: any(p.name == "qm_otel.degraded" and p.value == 1 for p in r.snapshot()[2]))
    for n in range(100):
        service.get(f"/lookup/h{n}", params={"hit": "true"})
    assert service.get("/readyz").json()["degraded"] is False
    receiver.wait_for(lambda r: any(str(g.body) == "Leaving degraded mode" for g in r.snapshot()[1]))
    points = receiver.snapshot()[2]
    requests = {p.attributes["result"] for p in points if p.name == "qm_otel.cache.requests"}
    assert requests == {"hit", "miss"}
    assert any(p.name == "qm_otel.cache.hit_ratio" and p.attributes == {"cache": "profiles"} for p in points)
    memory = [p for p in points if p.name == "process.memory.usage"]
    assert memory
    assert memory[-1].value > 10 * 1024 * 1024


def test_health_paths_are_configurable(receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint, QM_OTEL_HEALTH_PATH="/live", QM_OTEL_READY_PATH="/ready")
    with svc.start(APP, env) as service:
        assert service.get("/live").json() == {"status": "ok"}
        assert service.get("/ready").json()["status"] == "ready"
        assert service.get("/healthz").status_code == 404
        assert service.get("/pay").status_code == 200
        receiver.wait_for(lambda r: any(s.name == "GET /pay" for s in r.snapshot()[0]))
    assert not [s for s in receiver.snapshot()[0] if s.name in ("GET /live", "GET /ready")]  # not traced either
