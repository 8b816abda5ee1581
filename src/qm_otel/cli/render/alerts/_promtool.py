"""Promtool unit tests for every Prometheus rule: fires past its threshold, silent inside it, resolves.

Input values come from the conventions data, so a changed threshold moves the tests with the rules;
each expected value (and so each rendered description) is worked out here.
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.alerts._prometheus import EVENT_LOOP_STALLS, MIB, REQUESTS, burn_factors, slow_bucket_edge
from qm_otel.cli.render.alerts._rule import Rule
from qm_otel.core.conventions import Conventions

__all__ = ["promtool_tests"]

SVC = {"service_name": "checkout"}
QUIET = {"service_name": "quiet"}
Expect = tuple[dict[str, str], float]


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


class _Cases:
    """Builds the test list; ``check`` names the rule and the alerts expected at an evaluation time."""

    def __init__(self, rules: list[Rule], runbooks: str) -> None:
        self.rules = {rule.alert: rule for rule in rules}
        self.runbooks = runbooks
        self.tests: list[dict[str, Any]] = []

    def add(self, name: str, series: list[dict[str, str]], alert: str, checks: list[tuple[str, list[Expect]]],
            interval: str = "1m") -> None:
        rule = self.rules[alert]
        self.tests.append({
            "name": name,
            "interval": interval,
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": at, "alertname": alert,
                 "exp_alerts": [rule.rendered(self.runbooks, labels, value) for labels, value in expected]}
                for at, expected in checks
            ],
        })


def _http(cases: _Cases, c: Conventions) -> None:
    a, policy = c.alerts, c.alert_policy
    count, bucket = f"{REQUESTS}_count", f"{REQUESTS}_bucket"
    # errors per 100 requests a minute: just above the threshold (then none from minute 20), just below
    fire, ok = int(a["error_rate_percent_above"]) + 1, int(a["error_rate_percent_above"]) - 1
    cases.add("error rate: fires above, silent below, resolves", [
        _series(count, {**SVC, "http_response_status_code": "500"}, f"0+{fire}x20 {20 * fire}+0x20"),
        _series(count, {**SVC, "http_response_status_code": "200"}, f"0+{100 - fire}x20 {20 * (100 - fire)}+100x20"),
        _series(count, {**QUIET, "http_response_status_code": "500"}, f"0+{ok}x40"),
        _series(count, {**QUIET, "http_response_status_code": "200"}, f"0+{100 - ok}x40"),
    ], "QmOtelHighErrorRate", [("3m", []), ("15m", [(SVC, fire)]), ("35m", [])])

    # p95: every request between a bucket edge at half the threshold and one at twice it (then all fast)
    limit = a["response_time_ms_above"] / 1000
    low, high = limit / 2, limit * 2
    fast_p95 = 1000 * low * 0.95  # all in the first bucket: interpolated from 0
    assert fast_p95 < a["response_time_ms_above"]
    cases.add("p95 response time: fires above, silent below, resolves", [
        _series(bucket, {**SVC, "le": f"{low:g}"}, "0+0x20 0+100x20"),
        _series(bucket, {**SVC, "le": f"{high:g}"}, "0+100x40"),
        _series(bucket, {**SVC, "le": "+Inf"}, "0+100x40"),
        _series(bucket, {**QUIET, "le": f"{low:g}"}, "0+100x40"),
        _series(bucket, {**QUIET, "le": f"{high:g}"}, "0+100x40"),
        _series(bucket, {**QUIET, "le": "+Inf"}, "0+100x40"),
    ], "QmOtelSlowResponses", [("15m", [(SVC, 1000 * (low + (high - low) * 0.95))]), ("35m", [])])

    # slow requests: the share beyond the bucket edge, just above the threshold share, then none
    edge, share = slow_bucket_edge(c.slow_request_ms), policy.slow_request_percent_above
    slow_fire, slow_ok = 2 * share, share / 2  # per 100 requests a minute
    cases.add("slow requests: fires above, silent below, resolves", [
        _series(count, SVC, "0+100x40"),
        _series(bucket, {**SVC, "le": f"{edge:g}"}, f"0+{100 - slow_fire:g}x20 {20 * (100 - slow_fire):g}+100x20"),
        _series(count, QUIET, "0+100x40"),
        _series(bucket, {**QUIET, "le": f"{edge:g}"}, f"0+{100 - slow_ok:g}x40"),
    ], "QmOtelSlowRequests", [("15m", [(SVC, slow_fire)]), ("35m", [])])
    _burn_rates(cases, c)



def _burn_series(count: str, per_step: float, errors: float, quiet_errors: float, *, burning: int,
                 after: int) -> list[dict[str, str]]:
    """Promtool input series: a burning service and a quiet one.

    The burning service fails ``errors`` of ``per_step`` requests for ``burning`` steps, then none for
    ``after`` steps; the quiet one fails ``quiet_errors`` per step throughout.
    """

    def status(labels: dict[str, str], code: str) -> dict[str, str]:
        return {**labels, "http_response_status_code": code}

    steps = burning + after
    return [
        _series(count, status(SVC, "500"), f"0+{errors:g}x{burning} {burning * errors:g}+0x{after}"),
        _series(count, status(SVC, "200"), f"0+{per_step - errors:g}x{burning} "
                                           f"{burning * (per_step - errors):g}+{per_step}x{after}"),
        _series(count, status(QUIET, "500"), f"0+{quiet_errors:g}x{steps}"),
        _series(count, status(QUIET, "200"), f"0+{per_step - quiet_errors:g}x{steps}"),
    ]


def _burn_rates(cases: _Cases, c: Conventions) -> None:
    count = f"{REQUESTS}_count"
    budget = 1 - c.alert_policy.slo_availability_percent / 100
    factors = {speed: sorted(f for s, f, _, _ in burn_factors(c) if s == speed) for speed in ("fast", "slow")}
    # fast: errors at 1.4x the higher page factor for 70 minutes, then none; quiet: below the lower one
    fast_burn = factors["fast"][-1] * 1.4
    per_min = 10000
    errors, quiet_errors = fast_burn * budget * per_min, factors["fast"][0] * 0.8 * budget * per_min
    cases.add("fast burn: fires above, silent below, resolves",
              _burn_series(count, per_min, errors, quiet_errors, burning=70, after=50),
              "QmOtelErrorBudgetFastBurn", [("70m", [(SVC, fast_burn)]), ("115m", [])])
    # slow: 1.5x the higher ticket factor for an hour (both windows: rates from the series' start),
    # then none until the 6h window has slid past; quiet: at half the lower ticket factor
    slow_burn = factors["slow"][-1] * 1.5
    per_step = 100000  # requests per 10 minutes
    errors, quiet_errors = slow_burn * budget * per_step, factors["slow"][0] * 0.5 * budget * per_step
    cases.add("slow burn: fires above, silent below, resolves",
              _burn_series(count, per_step, errors, quiet_errors, burning=6, after=48),
              "QmOtelErrorBudgetSlowBurn", [("1h", [(SVC, slow_burn)]), ("7h10m", [])], interval="10m")


def _runtime(cases: _Cases, c: Conventions) -> None:
    a = c.alerts
    below = int(a["cache_hit_rate_percent_below"])
    cache = "qm_otel_cache_requests_total"
    users, cold = {**SVC, "cache": "users"}, {**SVC, "cache": "cold"}
    cases.add("cache hit rate: fires below, silent above, resolves", [
        _series(cache, {**users, "result": "hit"}, f"0+{below - 1}x20 {20 * (below - 1)}+100x20"),
        _series(cache, {**users, "result": "miss"}, f"0+{100 - below + 1}x20 {20 * (100 - below + 1)}+0x20"),
        _series(cache, {**QUIET, "cache": "users", "result": "hit"}, f"0+{below + 1}x40"),
        _series(cache, {**QUIET, "cache": "users", "result": "miss"}, f"0+{100 - below - 1}x40"),
        # no hit at all for 20 minutes: no "hit" series at all, then only hits
        _series(cache, {**cold, "result": "miss"}, "0+10x20 200+0x20"),
        _series(cache, {**cold, "result": "hit"}, "_x20 0+10x20"),
    ], "QmOtelLowCacheHitRate", [("15m", [(users, below - 1), (cold, 0)]), ("35m", [])])

    mem = a["memory_mb_above"]
    cases.add("memory: fires above, silent below, resolves", [
        _series("process_memory_usage_bytes", {**SVC, "instance": "a"},
                f"{int((mem + 1) * MIB)}x20 {int((mem - 1) * MIB)}x20"),
        _series("process_memory_usage_bytes", {**QUIET, "instance": "b"}, f"{int((mem - 1) * MIB)}x40"),
    ], "QmOtelHighMemory", [("5m", []), ("15m", [({**SVC, "instance": "a"}, mem + 1)]), ("35m", [])])

    startup = c.bands["bootstrap"].warning
    cases.add("start-up: fires above, silent below, resolves on a faster restart", [
        _series("qm_otel_startup_duration_seconds", {**SVC, "instance": "a"},
                f"{(startup + 1) / 1000:g}x10 {(startup / 2) / 1000:g}x10"),
        _series("qm_otel_startup_duration_seconds", {**QUIET, "instance": "b"}, f"{(startup - 1) / 1000:g}x20"),
    ], "QmOtelSlowStartup", [("5m", [({**SVC, "instance": "a"}, startup + 1)]), ("15m", [])])
    _breakers(cases)

    _event_loop(cases, c)

    cases.add("degraded mode: fires after 5m, silent when not degraded, resolves", [
        _series("qm_otel_degraded", SVC, "1x10 0x10"),
        _series("qm_otel_degraded", QUIET, "0x20"),
    ], "QmOtelDegradedMode", [("2m", []), ("8m", [(SVC, 1)]), ("15m", [])])


def _event_loop(cases: _Cases, c: Conventions) -> None:
    per_minute = c.alert_policy.event_loop_stalls_per_minute_above
    # checkout: two worker processes stall at (the threshold + 1) / 2 a minute each for 20 minutes, one
    # inside a route, one outside any request (no http_route); then none. quiet: half the threshold for
    # 40 minutes. burst: 20 times the threshold's 5 minutes' worth in one minute, then none: pending
    # for about 5 minutes, never for the 10 of the rule's for:, so it never fires
    each = (per_minute + 1) / 2
    burst = 20 * 5 * per_minute
    stalling = f"0+{each:g}x20 {20 * each:g}x20"
    cases.add("event loop blocked: fires on sustained stalls, silent below and on one burst, resolves", [
        _series(EVENT_LOOP_STALLS, {**SVC, "instance": "a", "http_route": "/report"}, stalling),
        _series(EVENT_LOOP_STALLS, {**SVC, "instance": "b"}, stalling),
        _series(EVENT_LOOP_STALLS, {**QUIET, "instance": "c", "http_route": "/report"}, f"0+{per_minute / 2:g}x40"),
        _series(EVENT_LOOP_STALLS, {"service_name": "burst", "instance": "d"}, f"0 {burst:g}+0x39"),
    ], "QmOtelEventLoopBlocked", [("5m", []), ("15m", [(SVC, 2 * each)]), ("40m", [])])


def _breakers(cases: _Cases) -> None:
    state = "qm_otel_breaker_state"
    inventory, payments = {**SVC, "breaker": "inventory"}, {**QUIET, "breaker": "payments"}
    # issue 15: trial calls (HALF_OPEN samples) between OPEN ones must not reset the for: timer
    cases.add("breaker open: HALF_OPEN samples keep it open, a blip stays silent, closing resolves", [
        _series(state, {**inventory, "state": "OPEN"}, "1 1 0 1 1 0 1 1 0 1 0x10"),
        _series(state, {**inventory, "state": "HALF_OPEN"}, "0 0 1 0 0 1 0 0 1 0 0x10"),
        _series(state, {**inventory, "state": "CLOSED"}, "0 0 0 0 0 0 0 0 0 0 1x10"),
        _series(state, {**payments, "state": "OPEN"}, "0 0 0 1 0 0 0 0 0 0 0x10"),  # open for one sample
        _series(state, {**payments, "state": "CLOSED"}, "1 1 1 0 1 1 1 1 1 1 1x10"),
    ], "QmOtelCircuitBreakerOpen", [("3m", [(inventory, 1)]), ("5m", [(inventory, 1)]),
                                    ("6m", [(inventory, 1)]), ("15m", [])])
    moves = "qm_otel_breaker_transitions_total"
    opened = {"from": "CLOSED", "to": "OPEN"}
    cases.add("breaker flapping: fires on repeated openings, silent below, resolves", [
        _series(moves, {**inventory, **opened}, "0 1 2 3 4 4x50"),
        _series(moves, {**payments, **opened}, "0 1 2 2x50"),
        # a breaker stuck open (failed trials) is QmOtelCircuitBreakerOpen's, not flapping
        _series(moves, {**payments, "from": "HALF_OPEN", "to": "OPEN"}, "0+1x54"),
    ], "QmOtelCircuitBreakerFlapping", [("10m", [(inventory, 4)]), ("45m", [])])


def _pipeline(cases: _Cases) -> None:
    cases.add("service absent: fires when its series stop, silent while reporting, resolves on return", [
        _series("target_info", SVC, "1x20 _x20 1x20"),
        _series("target_info", QUIET, "1x60"),
        _series("up", {"job": "scraped", "instance": "h:1", "service_name": "scraped"}, "1x10 0x30 1x20"),
        _series("up", {"job": "prometheus", "instance": "localhost:9090"}, "0x60"),  # not a service
    ], "QmOtelServiceAbsent", [("8m", []), ("35m", [(SVC, 1), ({"service_name": "scraped"}, 0)]), ("55m", [])])
    dropped = "qm_otel_telemetry_dropped_total"
    cases.add("telemetry dropped: fires while items are dropped, silent without, resolves", [
        _series(dropped, {**SVC, "signal": "logs", "reason": "queue_full"}, "0+5x20 100+0x20"),
        _series(dropped, {**QUIET, "signal": "traces", "reason": "queue_full"}, "0x40"),
    ], "QmOtelTelemetryDropped", [("5m", []), ("15m", [({**SVC, "signal": "logs"}, 5)]), ("35m", [])])
    cases.add("collector export failing: fires on sustained failures, silent without, resolves", [
        _series("otelcol_exporter_send_failed_log_records_total", {"exporter": "otlp_http/loki"},
                "0+50x20 1000+0x20"),
        _series("otelcol_exporter_send_failed_spans_total", {"exporter": "otlp_grpc/tempo"}, "0x40"),
    ], "QmOtelCollectorExportFailing", [("15m", [({"exporter": "otlp_http/loki"}, 50)]), ("35m", [])])


def promtool_tests(c: Conventions, rules: list[Rule], rules_file: str) -> dict[str, Any]:
    """The promtool test file for ``rules`` (as rendered into ``rules_file``)."""
    cases = _Cases(rules, c.alert_policy.runbook_base_url)
    _http(cases, c)
    _runtime(cases, c)
    _pipeline(cases)
    untested = set(cases.rules) - {test["alert_rule_test"][0]["alertname"] for test in cases.tests}
    if untested:
        raise RuntimeError(f"alert rules without a promtool test: {', '.join(sorted(untested))}")
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": cases.tests}
