"""Loki ruler rules: what only the logs show, as LogQL in the Prometheus rule-group format.

Records reach Loki over OTLP: ``service.name`` is the ``service_name`` stream label; the severity
(``severity_text``: ERROR, FATAL for Python's CRITICAL) and the log attributes (the request log's
``duration_ms``, ``http_method``) are structured metadata, filtered with ``| name op value``
after the stream selector (collector/loki.yaml; Loki's OTLP ingestion keeps ``severity_text``
and ``severity_number`` as structured metadata).
"""

from __future__ import annotations

from qm_otel.cli.render.alerts._rule import Rule
from qm_otel.core.conventions import Conventions

__all__ = ["LOKI_WINDOW", "loki_rules"]

LOKI_WINDOW = "5m"
#: every service's stream (a selector needs at least one matcher that is not empty-compatible)
_STREAMS = '{service_name=~".+"}'


def loki_rules(c: Conventions) -> list[Rule]:
    """The Loki alerting rules."""
    policy = c.alert_policy
    per_minute = policy.error_logs_per_minute_above
    minutes = int(LOKI_WINDOW[:-1])
    slow_ms, slow_count = c.slow_request_ms, policy.slow_request_logs_above
    return [
        Rule("QmOtelErrorLogRate",
             f'sum by (service_name) (count_over_time({_STREAMS} | severity_text=~"ERROR|FATAL|CRITICAL" '
             f"[{LOKI_WINDOW}])) / {minutes} > {per_minute:g}",
             "5m", "warning", f"{{service_name}}: over {per_minute:g} ERROR log records a minute",
             f"{{value}} ERROR/FATAL records a minute over the last {LOKI_WINDOW} (threshold {per_minute:g})."),
        Rule("QmOtelSlowRequestLogs",
             f'sum by (service_name) (count_over_time({_STREAMS} | http_method=~".+" | duration_ms > {slow_ms:g} '
             f'| __error__="" [{LOKI_WINDOW}])) > {slow_count:g}',
             "0s", "warning", f"{{service_name}}: requests slower than {slow_ms / 1000:g} s",
             f"{{value}} request-log records over the last {LOKI_WINDOW} took longer than {slow_ms:g} ms "
             f"(threshold {slow_count:g}); each names its route, user and trace.", ".0f"),
    ]
