"""Prometheus alert rules and their promtool tests, generated from the conventions data.

The thresholds are the conventions' ``[alerts]`` (error rate > 5 %, cache hit rate < 70 %, memory
> 100 MB, response time > 200 ms) plus an open circuit breaker and degraded mode. Metric names are
the Prometheus names of the OTel instruments (OTLP translation with unit suffixes).
"""

from __future__ import annotations

from typing import Any

from qm_otel.conventions import Conventions

__all__ = ["alert_rules", "alert_tests"]

MIB = 1024 * 1024
_WINDOW = "5m"


def _rules(c: Conventions) -> list[dict[str, Any]]:
    a = c.alerts
    errors = 'http_server_request_duration_seconds_count{http_response_status_code=~"5.."}'
    return [
        {
            "alert": "QmOtelHighErrorRate",
            "expr": (f"100 * sum by (job) (rate({errors}[{_WINDOW}])) / "
                     f"sum by (job) (rate(http_server_request_duration_seconds_count[{_WINDOW}])) "
                     f"> {a['error_rate_percent_above']:g}"),
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"{{{{ $labels.job }}}}: error rate above {a['error_rate_percent_above']:g} %",
                "description": "Share of HTTP responses with a 5xx status over the last 5 minutes.",
            },
        },
        {
            "alert": "QmOtelSlowResponses",
            "expr": (f"1000 * histogram_quantile(0.95, sum by (job, le) "
                     f"(rate(http_server_request_duration_seconds_bucket[{_WINDOW}]))) "
                     f"> {a['response_time_ms_above']:g}"),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"{{{{ $labels.job }}}}: p95 response time above {a['response_time_ms_above']:g} ms",
                "description": "95th percentile of http.server.request.duration over the last 5 minutes.",
            },
        },
        {
            "alert": "QmOtelLowCacheHitRate",
            # "or ... * 0": a cache with no hit at all has no hit series; its rate is 0, not absent
            "expr": (f'100 * (sum by (job, cache) (rate(qm_otel_cache_requests_total{{result="hit"}}[{_WINDOW}])) '
                     f"or sum by (job, cache) (rate(qm_otel_cache_requests_total[{_WINDOW}])) * 0) / "
                     f"sum by (job, cache) (rate(qm_otel_cache_requests_total[{_WINDOW}])) "
                     f"< {a['cache_hit_rate_percent_below']:g}"),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (f"{{{{ $labels.job }}}}: cache {{{{ $labels.cache }}}} hit rate below "
                            f"{a['cache_hit_rate_percent_below']:g} %"),
                "description": "Hits over all lookups (qm_otel.cache_hit / cache_miss) over the last 5 minutes.",
            },
        },
        {
            "alert": "QmOtelHighMemory",
            "expr": f"max by (job, instance) (process_memory_usage_bytes) / {MIB} > {a['memory_mb_above']:g}",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (f"{{{{ $labels.job }}}} ({{{{ $labels.instance }}}}): resident memory above "
                            f"{a['memory_mb_above']:g} MB"),
                "description": "Resident set size of the process (MB = 2^20 bytes).",
            },
        },
        {
            "alert": "QmOtelCircuitBreakerOpen",
            "expr": 'max by (job, breaker) (qm_otel_breaker_state{state="OPEN"}) == 1',
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "{{ $labels.job }}: circuit breaker {{ $labels.breaker }} is open",
                "description": (f"{c.breaker.failure_threshold} failures within {c.breaker.window_s:g} s opened it; "
                                f"a trial call follows every {c.breaker.recovery_s:g} s."),
            },
        },
        {
            "alert": "QmOtelDegradedMode",
            "expr": "max by (job) (qm_otel_degraded) == 1",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.job }} is in degraded mode",
                "description": (f"A cache hit rate fell below {c.degradation.cache_hit_rate_below:g} % "
                                f"over its last {c.degradation.window} lookups."),
            },
        },
    ]


def alert_rules(c: Conventions) -> dict[str, Any]:
    """The Prometheus rule file."""
    return {"groups": [{"name": "qm-otel", "rules": _rules(c)}]}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


def _expected(rules: dict[str, dict[str, Any]], alertname: str, labels: dict[str, str]) -> dict[str, Any]:
    """One expected alert: its labels and its annotations rendered with those labels."""
    rule = rules[alertname]
    annotations = {}
    for key, template in rule["annotations"].items():
        text = template
        for name, value in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", value)
        annotations[key] = text
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def alert_tests(c: Conventions, rules_file: str) -> dict[str, Any]:
    """Promtool unit tests: each alert fires just past its threshold and stays silent just inside it."""
    a = c.alerts
    rules = {rule["alert"]: rule for rule in _rules(c)}
    svc = {"job": "checkout"}
    quiet = {"job": "quiet"}
    err = a["error_rate_percent_above"]
    # 100 requests/min; errors per minute just above and just below the threshold
    fire_errors, ok_errors = int(err) + 1, max(int(err) - 1, 0)
    total = "0+100x30"
    duration = "http_server_request_duration_seconds"
    slow_ms = a["response_time_ms_above"]
    # all requests in the bucket above the threshold (fires) / below it (silent)
    slow_bucket, fast_bucket = f"{2 * slow_ms / 1000:g}", f"{slow_ms / 2 / 1000:g}"
    hit_below = a["cache_hit_rate_percent_below"]
    mem_mb = a["memory_mb_above"]
    tests = [
        {
            "name": "error rate",
            "interval": "1m",
            "input_series": [
                _series(f"{duration}_count", {**svc, "http_response_status_code": "500"}, f"0+{fire_errors}x30"),
                _series(f"{duration}_count", {**svc, "http_response_status_code": "200"},
                        f"0+{100 - fire_errors}x30"),
                _series(f"{duration}_count", {**quiet, "http_response_status_code": "500"}, f"0+{ok_errors}x30"),
                _series(f"{duration}_count", {**quiet, "http_response_status_code": "200"},
                        f"0+{100 - ok_errors}x30"),
            ],
            "alert_rule_test": [{
                "eval_time": "20m", "alertname": "QmOtelHighErrorRate",
                "exp_alerts": [_expected(rules, "QmOtelHighErrorRate", svc)],
            }],
        },
        {
            "name": "slow responses",
            "interval": "1m",
            "input_series": [
                _series(f"{duration}_bucket", {**svc, "le": fast_bucket}, "0+0x30"),
                _series(f"{duration}_bucket", {**svc, "le": slow_bucket}, total),
                _series(f"{duration}_bucket", {**svc, "le": "+Inf"}, total),
                _series(f"{duration}_bucket", {**quiet, "le": fast_bucket}, total),
                _series(f"{duration}_bucket", {**quiet, "le": slow_bucket}, total),
                _series(f"{duration}_bucket", {**quiet, "le": "+Inf"}, total),
            ],
            "alert_rule_test": [{
                "eval_time": "20m", "alertname": "QmOtelSlowResponses",
                "exp_alerts": [_expected(rules, "QmOtelSlowResponses", svc)],
            }],
        },
        {
            "name": "cache hit rate",
            "interval": "1m",
            "input_series": [
                _series("qm_otel_cache_requests_total", {**svc, "cache": "users", "result": "hit"},
                        f"0+{int(hit_below) - 1}x30"),
                _series("qm_otel_cache_requests_total", {**svc, "cache": "users", "result": "miss"},
                        f"0+{100 - int(hit_below) + 1}x30"),
                _series("qm_otel_cache_requests_total", {**quiet, "cache": "users", "result": "hit"},
                        f"0+{int(hit_below) + 1}x30"),
                _series("qm_otel_cache_requests_total", {**quiet, "cache": "users", "result": "miss"},
                        f"0+{100 - int(hit_below) - 1}x30"),
                # a cache that never hits has no "hit" series at all
                _series("qm_otel_cache_requests_total", {**svc, "cache": "cold", "result": "miss"}, "0+10x30"),
            ],
            "alert_rule_test": [{
                "eval_time": "20m", "alertname": "QmOtelLowCacheHitRate",
                "exp_alerts": [_expected(rules, "QmOtelLowCacheHitRate", {"cache": "cold", **svc}),
                               _expected(rules, "QmOtelLowCacheHitRate", {"cache": "users", **svc})],
            }],
        },
        {
            "name": "memory",
            "interval": "1m",
            "input_series": [
                _series("process_memory_usage_bytes", {**svc, "instance": "a"}, f"{int((mem_mb + 1) * MIB)}x30"),
                _series("process_memory_usage_bytes", {**quiet, "instance": "b"}, f"{int((mem_mb - 1) * MIB)}x30"),
            ],
            "alert_rule_test": [{
                "eval_time": "20m", "alertname": "QmOtelHighMemory",
                "exp_alerts": [_expected(rules, "QmOtelHighMemory", {"instance": "a", **svc})],
            }],
        },
        {
            "name": "circuit breaker",
            "interval": "1m",
            "input_series": [
                _series("qm_otel_breaker_state", {**svc, "breaker": "inventory", "state": "OPEN"}, "1x10"),
                _series("qm_otel_breaker_state", {**svc, "breaker": "inventory", "state": "CLOSED"}, "0x10"),
                _series("qm_otel_breaker_state", {**quiet, "breaker": "payments", "state": "OPEN"}, "0x10"),
            ],
            "alert_rule_test": [{
                "eval_time": "5m", "alertname": "QmOtelCircuitBreakerOpen",
                "exp_alerts": [_expected(rules, "QmOtelCircuitBreakerOpen", {"breaker": "inventory", **svc})],
            }],
        },
        {
            "name": "degraded mode",
            "interval": "1m",
            "input_series": [
                _series("qm_otel_degraded", svc, "1x10"),
                _series("qm_otel_degraded", quiet, "0x10"),
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "QmOtelDegradedMode",
                 "exp_alerts": [_expected(rules, "QmOtelDegradedMode", svc)]},
                {"eval_time": "2m", "alertname": "QmOtelDegradedMode", "exp_alerts": []},  # not yet "for" 5m
            ],
        },
    ]
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}
