"""Issue 23, item 2: collector/alertmanager.yml in a real Alertmanager groups and inhibits per service.

amtool cannot evaluate inhibition offline, so Debian's Alertmanager (0.25; the stack runs 0.34, the
config uses nothing newer than ``source_matchers``, 0.22) is started on 127.0.0.1 with the config
as it is, clustering off. Alerts are posted as Prometheus would post them: each with the labels its
rule aggregates by. Read back from ``/api/v2/alerts``, an alert is ``suppressed`` (``inhibitedBy``
its source) exactly when :data:`IMPLIES` says an alert of the same service implies it; alerts of
another service, and the collector's own alert, stay active. ``/api/v2/alerts/groups`` shows one
group per alert name and service.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qm_otel.cli.render import LOKI_RULES, RULES
from tests.support.polling import wait_for
from tests.support.service import free_port, launch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "collector" / "alertmanager.yml"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = pytest.mark.skipif(ALERTMANAGER is None and not os.environ.get("CI"),
                                reason="alertmanager (Debian prometheus-alertmanager) not installed")

ERROR_BUDGET = {"QmOtelErrorBudgetFastBurn", "QmOtelErrorBudgetSlowBurn"}
#: while the key fires for a service, these alerts of that service are the same incident
IMPLIES: dict[str, set[str]] = {
    "QmOtelServiceAbsent": {"*"},  # every other alert of the service
    "QmOtelCircuitBreakerOpen": {"QmOtelHighErrorRate", "QmOtelErrorLogRate", "QmOtelCircuitBreakerFlapping",
                                 *ERROR_BUDGET},
    "QmOtelHighErrorRate": {"QmOtelErrorLogRate", "QmOtelSlowResponses", "QmOtelSlowRequests",
                            "QmOtelSlowRequestLogs", *ERROR_BUDGET},
    "QmOtelErrorBudgetFastBurn": {"QmOtelErrorBudgetSlowBurn"},
    "QmOtelSlowRequests": {"QmOtelSlowRequestLogs"},
    "QmOtelDegradedMode": {"QmOtelLowCacheHitRate"},
    "QmOtelEventLoopBlocked": {"QmOtelSlowResponses"},
}
#: a value for each label a rule aggregates by besides service_name (set per posted alert)
EXTRA_LABELS = {"cache": "users", "instance": "demo:8000", "breaker": "inventory", "signal": "logs",
                "exporter": "otlp_http/loki"}
_BY = re.compile(r"\bby \(([^)]*)\)")


def defined_alerts() -> dict[str, dict[str, str]]:
    """Alert name → its labels: severity, and a value for each label every ``by (...)`` of it keeps."""
    alerts = {}
    for path in (ROOT / RULES, ROOT / LOKI_RULES):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                kept = set.intersection(*({label.strip() for label in by.split(",")}
                                          for by in _BY.findall(rule["expr"])))
                labels = {"alertname": rule["alert"], **rule["labels"]}
                labels.update({key: EXTRA_LABELS.get(key, "") for key in kept - {"le"}})
                alerts[rule["alert"]] = labels
    return alerts


def implied(source: str, target: str) -> bool:
    targets = IMPLIES.get(source, set())
    return source != target and ("*" in targets or target in targets)


@contextlib.contextmanager
def alertmanager(directory: Path) -> Iterator[str]:
    """Alertmanager with collector/alertmanager.yml, its data and log under ``directory``; yield its URL."""
    assert ALERTMANAGER is not None, "alertmanager is not installed (scripts/install installs it)"
    port = free_port()
    command = [ALERTMANAGER, f"--config.file={CONFIG}", f"--storage.path={directory / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    with launch(command, port, dict(os.environ)):
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, "alertmanager ready", 10)
        yield url


def test_alerts_are_grouped_and_inhibited_per_service(tmp_path: Path) -> None:
    defined = defined_alerts()
    assert set(IMPLIES) <= set(defined)
    assert all(target in defined for targets in IMPLIES.values() for target in targets - {"*"})
    per_service = [name for name, labels in defined.items() if "service_name" in labels]
    assert set(defined) - set(per_service) == {"QmOtelCollectorExportFailing"}
    # One service per source: the source and every other per-service alert. A control service
    # with every alert that is no source. The collector's alert, and a source without a service.
    posted: list[dict[str, str]] = []
    for source in IMPLIES:
        service = f"svc-{source}"
        posted += [{**defined[name], "service_name": service} for name in per_service
                   if name == source or name not in IMPLIES or implied(source, name)]
    posted += [{**defined[name], "service_name": "control"} for name in per_service if name not in IMPLIES]
    posted.append(defined["QmOtelCollectorExportFailing"])
    posted.append({"alertname": "QmOtelServiceAbsent", "severity": "critical"})  # no service_name
    posted.append({**defined["QmOtelCircuitBreakerFlapping"], "service_name": "svc-QmOtelCircuitBreakerOpen",
                   "breaker": "payments"})  # another breaker of the breaker-open service

    def expected(labels: dict[str, str]) -> bool:
        """Suppressed: another alert of the same service (and breaker, where both have one) implies it."""
        return any(implied(other["alertname"], labels["alertname"])
                   and labels.get("service_name") and other.get("service_name") == labels.get("service_name")
                   and not (labels["alertname"] == "QmOtelCircuitBreakerFlapping"
                            and other["alertname"] == "QmOtelCircuitBreakerOpen"
                            and other["breaker"] != labels["breaker"])
                   for other in posted)

    with alertmanager(tmp_path) as url:
        answer = httpx.post(f"{url}/api/v2/alerts", json=[{"labels": labels} for labels in posted], timeout=5)
        assert answer.status_code == 200, answer.text

        def states() -> list[dict[str, Any]] | None:
            alerts: list[dict[str, Any]] = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
            if len(alerts) != len(posted) or not any(a["status"]["state"] == "suppressed" for a in alerts):
                return None  # not all in yet, or the inhibitor has not seen its sources yet
            return alerts

        alerts = wait_for(states, "the posted alerts, some suppressed", 10)
        fingerprints = {a["fingerprint"]: a["labels"] for a in alerts}
        wrong = []
        suppressed = 0
        for alert in alerts:
            labels, status = alert["labels"], alert["status"]
            want = expected(labels)
            suppressed += want
            if (status["state"] == "suppressed") != want or bool(status["inhibitedBy"]) != want:
                wrong.append((labels, status))
            for source in status["inhibitedBy"]:
                assert fingerprints[source].get("service_name") == labels.get("service_name"), (labels, source)
                assert implied(fingerprints[source]["alertname"], labels["alertname"]), (labels, source)
        assert not wrong, wrong
        pairs = [(source, target) for source, targets in IMPLIES.items() for target in targets - {"*"}]
        assert suppressed > len(pairs), "every pair is exercised (the service-absent one besides)"
        assert [a["labels"]["alertname"] for a in alerts if a["labels"].get("service_name") == "control"
                and a["status"]["state"] != "active"] == []

        groups = httpx.get(f"{url}/api/v2/alerts/groups", timeout=5).json()
        keys = sorted((group["labels"]["alertname"], group["labels"].get("service_name", "")) for group in groups)
        assert all(set(group["labels"]) <= {"alertname", "service_name"} for group in groups)
        assert keys == sorted({(a["alertname"], a.get("service_name", "")) for a in posted})
        slow = [service for name, service in keys if name == "QmOtelSlowResponses"]
        assert len(slow) >= 2, "each service's slow responses are a group of their own"
