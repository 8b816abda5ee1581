"""A real Prometheus scrapes a real service and evaluates the generated alert rules against its metrics.

Debian's Prometheus (2.42) has no OTLP receiver, so the service serves /metrics
(``metrics_exporter=prometheus``): the names are those Prometheus 3's OTLP receiver gives the same
instruments, so the rules, the dashboards and this test speak of the same series.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qm_otel.cli.render import RULES
from qm_otel.cli.render.alerts import alert_rules
from qm_otel.core.conventions import conventions
from tests.support import service as svc
from tests.support.polling import wait_for
from tests.support.prometheus import PROMETHEUS, prometheus_server, query

pytestmark = pytest.mark.skipif(PROMETHEUS is None and not os.environ.get("CI"),
                                reason="prometheus (Debian package) not installed")


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[svc.Service, str]]:
    metrics_port = svc.free_port()
    env = svc.base_env("http://127.0.0.1:9", QM_OTEL_METRICS_EXPORTER="prometheus", QM_OTEL_TRACES_EXPORTER="none",
                       QM_OTEL_LOGS_EXPORTER="none", QM_OTEL_PROMETHEUS_PORT=str(metrics_port),
                       TEST_RECOVERY_S="300")
    targets = [{"job_name": "itest", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}]
    with (svc.start("tests.integration.apps.resilience:app", env) as service,
          prometheus_server(tmp_path, [str(svc.ROOT / RULES)], targets) as prometheus):
        yield service, prometheus


def test_rules_load_and_their_expressions_see_the_services_metrics(scraped: tuple[svc.Service, str]) -> None:
    service, prometheus = scraped
    wait_for(lambda: httpx.get(f"{prometheus}/-/ready", timeout=5).status_code == 200)
    for _ in range(3):
        assert service.get("/pay").status_code == 200
    httpx.post(f"{service.url}/switch", params={"up": "false"})
    assert service.get("/pay").status_code == 502  # one failure: its series now exists
    service.get("/lookup/0", params={"hit": "false"})
    # every series the rules and the dashboard use, under the names they use, scraped once
    for metric in ("http_server_request_duration_seconds_count", "http_server_request_duration_seconds_bucket",
                   "qm_otel_cache_requests_total", "process_memory_usage_bytes", "qm_otel_breaker_state",
                   "qm_otel_degraded", "qm_otel_startup_duration_seconds", "qm_otel_breaker_calls_total"):
        wait_for(lambda m=metric: query(prometheus, f'{m}{{job="itest"}}'), timeout_s=60)
    # then the trouble, so that the counters rise between scrapes (rate() needs the increase)
    for _ in range(4):
        service.get("/pay")  # 2 more failures open the breaker (3 within 10 s), then rejections (503)
    for n in range(30):
        service.get(f"/lookup/{n}", params={"hit": "false"})  # 0 % hits: degraded
    errors = wait_for(lambda: query(prometheus, 'sum(rate(http_server_request_duration_seconds_count'
                                                '{job="itest",http_response_status_code=~"5.."}[1m])) > 0'))
    assert errors
    # the rules evaluate without errors, and the ones whose condition holds are pending or firing
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules(conventions())["groups"][0]["rules"]}

    def active() -> set[str]:
        current = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
        assert all(r["health"] == "ok" for r in current), [r.get("lastError") for r in current]
        return {r["name"] for r in current if r["state"] in ("pending", "firing")}

    fired = wait_for(lambda: (names := active()) >= {"QmOtelHighErrorRate", "QmOtelCircuitBreakerOpen",
                                                      "QmOtelLowCacheHitRate", "QmOtelDegradedMode"} and names)
    assert "QmOtelHighMemory" not in fired  # a small test service stays under 100 MB
