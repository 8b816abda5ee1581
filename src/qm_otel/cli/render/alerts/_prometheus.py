"""The Prometheus alert rules, every number from the conventions data.

Metric names are those Prometheus 3's OTLP receiver gives the OTel instruments
(``UnderscoreEscapingWithSuffixes``: unit and ``_total`` suffixes), which the service's own
``/metrics`` endpoint also serves. Series are grouped by ``service_name``: the receiver promotes
``service.name`` to that label (collector/prometheus.yml), whereas ``job`` becomes
``namespace/name`` once ``service.namespace`` is set. Why each ``for:`` is what it is:
docs/runbooks.md, one section per alert.
"""

from __future__ import annotations

from qm_otel.cli.render.alerts._rule import Rule, duration
from qm_otel.core.conventions import Conventions
from qm_otel.integrations.server import DURATION_BUCKETS

__all__ = ["BURN_WINDOWS", "EVENT_LOOP_STALLS", "MIB", "burn_factors", "prometheus_rules", "slow_bucket_edge"]

MIB = 1024 * 1024
WINDOW = "5m"
REQUESTS = "http_server_request_duration_seconds"
SERVER_ERRORS = 'http_response_status_code=~"5.."'
#: the watchdog's counter of event-loop stalls (qm_otel.event_loop.blocked, unit {stall}; by http_route)
EVENT_LOOP_STALLS = "qm_otel_event_loop_blocked_total"
#: the SRE workbook's multiwindow, multi-burn-rate table (chapter "Alerting on SLOs"): share of the
#: period's error budget spent, long window, short window (1/12 of the long one); page or ticket
BURN_WINDOWS = (
    ("fast", 0.02, "1h", "5m"),
    ("fast", 0.05, "6h", "30m"),
    ("slow", 0.10, "1d", "2h"),
    ("slow", 0.10, "3d", "6h"),
)
_HOURS = {"h": 1, "d": 24}


def slow_bucket_edge(slow_ms: float) -> float:
    """The duration histogram's first bucket edge at or above the slow-request threshold, seconds."""
    threshold = slow_ms / 1000
    return next((edge for edge in DURATION_BUCKETS if edge >= threshold), DURATION_BUCKETS[-1])


def _le(edge: float) -> str:
    """A matcher for the ``le`` label of ``edge`` as either path writes it ("2", "2.0", "2.5")."""
    text = f"{edge:g}"
    return f'le=~"{text}|{text}[.]0"' if edge == int(edge) else f'le="{text}"'


def _error_ratio(window: str) -> str:
    return (f"(sum by (service_name) (rate({REQUESTS}_count{{{SERVER_ERRORS}}}[{window}])) / "
            f"sum by (service_name) (rate({REQUESTS}_count[{window}])))")


def burn_factors(c: Conventions) -> list[tuple[str, float, str, str]]:
    """(page or ticket speed, burn-rate factor, long window, short window): 14.4, 6, 3, 1 for 30 days."""
    period_h = c.alert_policy.slo_period_days * 24
    return [(speed, spent * period_h / (int(long[:-1]) * _HOURS[long[-1]]), long, short)
            for speed, spent, long, short in BURN_WINDOWS]


def _burn(c: Conventions, speed: str) -> str:
    """Either (long, short) window pair of ``speed`` burning faster than its factor; the value: the long burn."""
    budget = 1 - c.alert_policy.slo_availability_percent / 100
    return " or ".join(
        f"({_error_ratio(long)} / {budget:g} > {factor:g} and {_error_ratio(short)} / {budget:g} > {factor:g})"
        for kind, factor, long, short in burn_factors(c) if kind == speed)


def _http_rules(c: Conventions) -> list[Rule]:
    a, policy = c.alerts, c.alert_policy
    err, p95_ms = a["error_rate_percent_above"], a["response_time_ms_above"]
    edge = slow_bucket_edge(c.slow_request_ms)
    total = f"sum by (service_name) (rate({REQUESTS}_count[{WINDOW}]))"
    slo = f"{policy.slo_availability_percent:g} %"
    return [
        Rule("QmOtelHighErrorRate",
             f"100 * sum by (service_name) (rate({REQUESTS}_count{{{SERVER_ERRORS}}}[{WINDOW}])) / {total} > {err:g}",
             "5m", "critical", f"{{service_name}}: error rate above {err:g} %",
             f"{{value}} % of HTTP responses were 5xx over the last {WINDOW} (threshold {err:g} %)."),
        Rule("QmOtelSlowResponses",
             f"1000 * histogram_quantile(0.95, sum by (service_name, le) (rate({REQUESTS}_bucket[{WINDOW}]))) "
             f"> {p95_ms:g}",
             "10m", "warning", f"{{service_name}}: p95 response time above {p95_ms:g} ms",
             f"p95 of http.server.request.duration is {{value}} ms over the last {WINDOW} "
             f"(threshold {p95_ms:g} ms; interpolated within a histogram bucket).", ".0f"),
        Rule("QmOtelSlowRequests",
             f"100 * ({total} - sum by (service_name) (rate({REQUESTS}_bucket{{{_le(edge)}}}[{WINDOW}]))) / {total} "
             f"> {policy.slow_request_percent_above:g}",
             "10m", "warning",
             f"{{service_name}}: over {policy.slow_request_percent_above:g} % of requests slower than {edge:g} s",
             f"{{value}} % of HTTP requests took longer than {edge:g} s over the last {WINDOW}"
             + ("." if edge * 1000 == c.slow_request_ms else
                f" (slow: over {c.slow_request_ms / 1000:g} s; {edge:g} s is the histogram's first bucket edge "
                "at or above it).")),
        Rule("QmOtelErrorBudgetFastBurn", _burn(c, "fast"), "2m", "critical",
             f"{{service_name}}: the {slo} availability SLO's error budget is burning fast",
             f"The error budget burns {{value}} times as fast as the {slo} SLO over "
             f"{policy.slo_period_days:g} days allows (page: 2 % of it gone in an hour or 5 % in six)."),
        Rule("QmOtelErrorBudgetSlowBurn", _burn(c, "slow"), "15m", "warning",
             f"{{service_name}}: the {slo} availability SLO's error budget is burning",
             f"The error budget burns {{value}} times as fast as the {slo} SLO over "
             f"{policy.slo_period_days:g} days allows (ticket: 10 % of it gone in a day or in three)."),
    ]


def _runtime_rules(c: Conventions) -> list[Rule]:
    a, policy, breaker = c.alerts, c.alert_policy, c.breaker
    hit, mem_mb = a["cache_hit_rate_percent_below"], a["memory_mb_above"]
    startup_ms = c.bands["bootstrap"].warning  # beyond the warning band: the error band
    hits = f'sum by (service_name, cache) (rate(qm_otel_cache_requests_total{{result="hit"}}[{WINDOW}]))'
    lookups = f"sum by (service_name, cache) (rate(qm_otel_cache_requests_total[{WINDOW}]))"
    flap_window = f"{policy.breaker_flap_window_minutes}m"
    stalls = policy.event_loop_stalls_per_minute_above
    block_ms = c.bands["response_time"].warning  # the watchdog's default threshold: the error band's edge
    return [
        Rule("QmOtelLowCacheHitRate",
             # "or ... * 0": a cache with no hit at all has no hit series; its rate is 0, not absent
             f"100 * ({hits} or {lookups} * 0) / {lookups} < {hit:g}",
             "10m", "warning", f"{{service_name}}: cache {{cache}} hit rate below {hit:g} %",
             f"Cache {{cache}} answered {{value}} % of its lookups from the cache over the last {WINDOW} "
             f"(threshold {hit:g} %)."),
        Rule("QmOtelHighMemory",
             f"max by (service_name, instance) (process_memory_usage_bytes) / {MIB} > {mem_mb:g}",
             "10m", "warning", f"{{service_name}} ({{instance}}): resident memory above {mem_mb:g} MB",
             f"Resident set size is {{value}} MB (threshold {mem_mb:g} MB; MB = 2^20 bytes)."),
        Rule("QmOtelSlowStartup",
             f"1000 * max by (service_name, instance) (qm_otel_startup_duration_seconds) > {startup_ms:g}",
             "0s", "warning", f"{{service_name}} ({{instance}}): start-up took over {startup_ms:g} ms",
             f"qm_otel.setup() took {{value}} ms at this process's start (error band: over {startup_ms:g} ms).",
             ".0f"),
        Rule("QmOtelCircuitBreakerOpen",
             # not CLOSED: a HALF_OPEN sample (a trial call) between OPEN ones does not reset the for: timer
             'max by (service_name, breaker) (qm_otel_breaker_state{state!="CLOSED"}) == 1',
             duration(2 * breaker.recovery_s), "critical",
             "{service_name}: circuit breaker {breaker} is open",
             f"Breaker {{breaker}} has not been CLOSED (OPEN or HALF_OPEN: {{value}}) for "
             f"{duration(2 * breaker.recovery_s)}: its trial call (every {breaker.recovery_s:g} s) keeps failing "
             f"and calls are rejected ({breaker.failure_threshold} failures within {breaker.window_s:g} s open it).",
             ".0f"),
        Rule("QmOtelCircuitBreakerFlapping",
             f'sum by (service_name, breaker) (increase(qm_otel_breaker_transitions_total{{from="CLOSED",to="OPEN"}}'
             f"[{flap_window}])) >= {policy.breaker_flap_openings}",
             "0s", "warning", "{service_name}: circuit breaker {breaker} is flapping",
             f"Breaker {{breaker}} opened {{value}} times in the last {flap_window} (threshold "
             f"{policy.breaker_flap_openings}): its dependency fails intermittently.", ".0f"),
        Rule("QmOtelEventLoopBlocked",
             f"60 * sum by (service_name) (rate({EVENT_LOOP_STALLS}[{WINDOW}])) > {stalls:g}",
             "10m", "warning", "{service_name}: the event loop keeps blocking",
             f"The event loop stalled {{value}} times a minute over the last {WINDOW} (threshold {stalls:g}): "
             f"something in an async path blocks it past the watchdog's threshold (default {block_ms:g} ms), and "
             "every request on that loop waits meanwhile. Each stall is a WARNING record of logger "
             "qm_otel.event_loop naming the blocking line and the request."),
        Rule("QmOtelDegradedMode", "max by (service_name) (qm_otel_degraded) == 1", "5m", "warning",
             "{service_name} is in degraded mode",
             f"A cache hit rate fell below {c.degradation.cache_hit_rate_below:g} % over its last "
             f"{c.degradation.window} lookups and has stayed there for 5m (qm_otel_degraded = {{value}}).", ".0f"),
    ]


def _pipeline_rules() -> list[Rule]:
    failed = 'otelcol_exporter_send_failed_(spans|metric_points|log_records)(_total)?'
    return [
        Rule("QmOtelServiceAbsent",
             # seen within the hour but not now (no sample in the 5m lookback, or a scrape's staleness
             # marker); or, where Prometheus scrapes the service, its target is down
             "(group by (service_name) (max_over_time(target_info[1h])) unless group by (service_name) (target_info)) "
             'or max by (service_name) (up{service_name!=""}) == 0',
             "2m", "critical", "{service_name} has stopped reporting",
             "No telemetry from {service_name} for over 5m after some within the last hour "
             "({value}: 1 = none of its series is left, 0 = its scrape target is down).", ".0f"),
        Rule("QmOtelTelemetryDropped",
             f"60 * sum by (service_name, signal) (rate(qm_otel_telemetry_dropped_total[{WINDOW}])) > 0",
             "10m", "warning", "{service_name}: {signal} telemetry is being dropped",
             f"The service dropped {{value}} {{signal}} items a minute over the last {WINDOW}, before export "
             "(a full queue or an unreachable collector)."),
        Rule("QmOtelCollectorExportFailing",
             f'60 * sum by (exporter) (rate({{__name__=~"{failed}"}}[{WINDOW}])) > 0',
             "10m", "warning", "collector exporter {exporter} keeps failing to send",
             f"The collector's {{exporter}} exporter failed to send {{value}} items a minute over the last {WINDOW} "
             "(spans, metric points and log records; its backend is down or refusing)."),
    ]


def prometheus_rules(c: Conventions) -> list[Rule]:
    """Every Prometheus alerting rule."""
    return [*_http_rules(c), *_runtime_rules(c), *_pipeline_rules()]
