"""Issue 15, item 6: the generated rules and dashboards against a real Prometheus scraping a real service.

Debian's Prometheus (2.42) has no OTLP receiver, so it scrapes the service's own /metrics endpoint
(``metrics_exporter=prometheus``), whose metric names equal those of the stack's OTLP path (a test
in test_prometheus_workers.py checks that). The stack's Prometheus 3 promotes ``service.name`` to a
``service_name`` label on every series (collector/prometheus.yml); the scrape config below adds
the same label to the scraped series as a target label, so rules and dashboards meet the series
they meet in the stack.

Proved here: every PromQL expression of every dashboard runs without an error; every panel of the
service overview and the conventions dashboard returns data (the runtime panels: the process and
CPython metrics; the event-loop panels: the watchdog's lag and the stalls of ``/block``, a
``time.sleep`` in an ``async def``); every rule evaluates without an
error; a breaker forced open makes QmOtelCircuitBreakerOpen pending, then firing. The rules are
rendered from a copy of the conventions whose breaker recovery time is 4 s, so that alert's
``for:`` (twice the recovery time: 1m in production) is 8 s here; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from qm_otel.cli.render.alerts import alert_rules
from qm_otel.core.conventions import conventions
from tests.support import service as svc
from tests.support.polling import wait_for
from tests.support.prometheus import PROMETHEUS, prometheus_server, query

pytestmark = pytest.mark.skipif(PROMETHEUS is None and not os.environ.get("CI"),
                                reason="prometheus (Debian package) not installed")

SERVICE = "itest"  # OTEL_SERVICE_NAME in svc.base_env
RECOVERY_S = 4.0
#: the event-loop watchdog's default threshold (ms)
BLOCK_MS = conventions().bands["response_time"].warning
#: the dashboards whose every panel must show data: the service overview and the conventions
PANELS_WITH_DATA = ("qm-otel-service", "qm-otel-conventions")
#: what Grafana would put in for the dashboards' variables
VARIABLES = {"service": ".*", "collector": ".*", "__rate_interval": "1m", "__interval": "1m", "__range": "1m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclasses.dataclass
class Stack:
    service: svc.Service
    prometheus: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        return query(self.prometheus, expr)

    def api(self, path: str) -> Any:
        answer = httpx.get(f"{self.prometheus}/api/v1/{path}", timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    c = conventions()
    quick = dataclasses.replace(c, breaker=dataclasses.replace(c.breaker, recovery_s=RECOVERY_S))
    rules = tmp / "qm-otel.rules.yml"
    rules.write_text(yaml.safe_dump(alert_rules(quick), sort_keys=False))
    metrics_port = svc.free_port()
    env = svc.base_env("http://127.0.0.1:9", QM_OTEL_METRICS_EXPORTER="prometheus", QM_OTEL_TRACES_EXPORTER="none",
                       QM_OTEL_LOGS_EXPORTER="none", QM_OTEL_PROMETHEUS_HOST="127.0.0.1",
                       QM_OTEL_PROMETHEUS_PORT=str(metrics_port), TEST_RECOVERY_S="300")
    targets = [{
        "job_name": "qm-otel-itest",
        # service_name: the label Prometheus 3's OTLP receiver promotes from service.name in the
        # stack; as a target label it is on every scraped series (target_info's own copy of it
        # becomes exported_service_name)
        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"service_name": SERVICE}}],
    }]
    with (svc.start("tests.integration.apps.alerting:app", env) as service,
          prometheus_server(tmp, [str(rules)], targets) as prometheus):
        yield Stack(service, prometheus)


def drive_traffic(stack: Stack) -> None:
    """Fast and slow requests, errors, cache hits and (mostly) misses.

    One request of each kind first, scraped, then the rest: rate() counts the increase between
    samples, so what a series held at its first scrape is not part of it.
    """
    service = stack.service
    for path, params in (("/ok", {}), ("/fail", {}), ("/sleep", {"ms": "250"}), ("/lookup/0", {"hit": "true"}),
                         ("/lookup/1", {"hit": "false"}), ("/pay", {})):
        service.get(path, params=params)
    wait_for(lambda: stack.query(f'http_server_request_duration_seconds_count{{service_name="{SERVICE}",'
                                 f'http_route="/pay"}}'), "the first requests scraped")
    # over 2 s, the slow threshold (a bucket edge of the duration histogram)
    slow = threading.Thread(target=service.get, args=("/sleep",), kwargs={"params": {"ms": "2600"}})
    slow.start()
    for n in range(20):
        assert service.get("/ok").status_code == 200
        service.get(f"/lookup/{n}", params={"hit": str(n % 4 == 0).lower()})
    for _ in range(3):
        assert service.get("/fail").status_code == 500
        assert service.get("/sleep", params={"ms": "250"}).status_code == 200
        # past the watchdog's threshold (the response-time band's error edge, 200 ms): a stall in /block
        assert service.get("/block", params={"ms": f"{1.5 * BLOCK_MS:g}"}).status_code == 200
    slow.join()


def force_breaker_open(stack: Stack) -> None:
    service = stack.service
    assert httpx.post(f"{service.url}/switch", params={"up": "false"}, timeout=10).status_code == 200
    assert [service.get("/pay").status_code for _ in range(3)] == [502, 502, 502]  # 3 failures within 10 s
    assert service.get("/pay").status_code == 503  # open: rejected without calling the dependency


def breaker_alert_states(stack: Stack) -> set[str]:
    return {alert["state"] for alert in stack.api("alerts")["alerts"]
            if alert["labels"].get("alertname") == "QmOtelCircuitBreakerOpen"
            and alert["labels"].get("breaker") == "payments" and alert["labels"].get("service_name") == SERVICE}


def test_a_breaker_forced_open_makes_its_alert_pending_then_firing(stack: Stack) -> None:
    wait_for(lambda: httpx.get(f"{stack.prometheus}/-/ready", timeout=5).status_code == 200, "Prometheus ready")
    wait_for(lambda: stack.query(f'up{{service_name="{SERVICE}"}} == 1'), "the service scraped")
    drive_traffic(stack)
    wait_for(lambda: stack.query(f'qm_otel_breaker_state{{service_name="{SERVICE}",state="CLOSED"}} == 1'),
             "the breaker's CLOSED state scraped")
    force_breaker_open(stack)
    seen: list[str] = []

    def firing() -> bool:
        states = breaker_alert_states(stack)
        seen.extend(sorted(states))
        return "firing" in states

    wait_for(firing, "QmOtelCircuitBreakerOpen firing")
    assert "pending" in seen, seen
    assert seen.index("pending") < seen.index("firing")


def prometheus_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every Prometheus query of a dashboard, rows' panels included."""
    for panel in dashboard.get("panels", []):
        yield from prometheus_targets(panel)
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus" and target.get("expr"):
                yield str(panel.get("title", "")), str(target["expr"])


def substituted(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in VARIABLES:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr}")
        return VARIABLES[name]

    return _VARIABLE.sub(value, expr)


def any_data(stack: Stack, exprs: list[str]) -> bool:
    return any(stack.query(expr) for expr in exprs)


def dashboards() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((svc.ROOT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        found[str(dashboard.get("uid", path.stem))] = dashboard
    return found


def test_every_dashboard_expression_runs_and_the_overview_and_conventions_panels_show_data(stack: Stack) -> None:
    # after the traffic of the test above (module-scoped stack); on its own, drive some first
    if not stack.query(f'http_server_request_duration_seconds_count{{service_name="{SERVICE}"}}'):
        wait_for(lambda: stack.query(f'up{{service_name="{SERVICE}"}} == 1'), "the service scraped")
        drive_traffic(stack)
    boards = dashboards()
    expressions = [(uid, title, substituted(expr)) for uid, board in boards.items()
                   for title, expr in prometheus_targets(board)]
    assert len(expressions) > 20
    for _, _, expr in expressions:
        stack.query(expr)  # raises with Prometheus's error for a bad expression
    missing = [uid for uid in PANELS_WITH_DATA if uid not in boards]
    assert not missing, f"dashboards not found: {missing}"
    for uid in PANELS_WITH_DATA:
        by_panel: dict[str, list[str]] = {}
        for panel_title, expr in prometheus_targets(boards[uid]):
            by_panel.setdefault(panel_title, []).append(substituted(expr))
        for panel_title, exprs in by_panel.items():
            wait_for(functools.partial(any_data, stack, exprs), f"data in {uid} / {panel_title}", timeout_s=30)


def test_every_rule_evaluates_without_error_against_the_scraped_series(stack: Stack) -> None:
    groups = stack.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {r["alert"] for r in alert_rules(conventions())["groups"][0]["rules"]}

    def current() -> list[dict[str, Any]]:
        return [rule for group in stack.api("rules")["groups"] for rule in group["rules"]]

    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("2") for r in current()), "every rule evaluated")
    bad = {r["name"]: r.get("lastError") for r in current() if r["health"] != "ok"}
    assert not bad, bad
    # the trouble drive_traffic made, seen by the rules under the stack's names and labels (their
    # for: is minutes, so pending is as far as these get within the test)
    expected = {"QmOtelHighErrorRate", "QmOtelErrorBudgetFastBurn", "QmOtelSlowRequests", "QmOtelSlowResponses",
                "QmOtelLowCacheHitRate", "QmOtelDegradedMode"}

    def active() -> set[str]:
        names = {r["name"] for r in current() if r["state"] in ("pending", "firing")}
        return names if names >= expected else set()

    assert "QmOtelHighMemory" not in wait_for(active, f"{sorted(expected)} pending or firing")
