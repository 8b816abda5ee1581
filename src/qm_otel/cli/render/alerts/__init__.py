"""Alert rules generated from the conventions data: Prometheus rules, their promtool tests, Loki rules.

- :func:`alert_rules`: the Prometheus rule file (``dashboards/alerts/qm-otel.rules.yml``);
- :func:`alert_tests`: promtool unit tests for every rule in it (fires, stays silent, resolves);
- :func:`loki_alert_rules`: the Loki ruler file (``dashboards/alerts/loki/qm-otel.rules.yml``), for
  what only the logs show.

Each rule carries ``severity``, a ``summary``, a ``description`` with its value and a
``runbook_url`` to its section of docs/runbooks.md (base: ``[alert_policy].runbook_base_url``).
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.alerts._loki import loki_rules
from qm_otel.cli.render.alerts._prometheus import prometheus_rules
from qm_otel.cli.render.alerts._promtool import promtool_tests
from qm_otel.cli.render.alerts._rule import Rule
from qm_otel.core.conventions import Conventions

__all__ = ["Rule", "alert_rules", "alert_tests", "loki_alert_rules", "loki_rules", "prometheus_rules"]


def alert_rules(c: Conventions) -> dict[str, Any]:
    """The Prometheus rule file."""
    base = c.alert_policy.runbook_base_url
    return {"groups": [{"name": "qm-otel", "rules": [rule.as_dict(base) for rule in prometheus_rules(c)]}]}


def alert_tests(c: Conventions, rules_file: str) -> dict[str, Any]:
    """Promtool unit tests for every rule of :func:`alert_rules`, rendered into ``rules_file``."""
    return promtool_tests(c, prometheus_rules(c), rules_file)


def loki_alert_rules(c: Conventions) -> dict[str, Any]:
    """The Loki ruler file (Prometheus rule-group format, LogQL expressions)."""
    base = c.alert_policy.runbook_base_url
    return {"groups": [{"name": "qm-otel-logs", "rules": [rule.as_dict(base) for rule in loki_rules(c)]}]}
