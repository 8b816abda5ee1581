"""Grafana dashboards generated from the conventions data: band colours are the threshold bands.

Grafana colours a value with the last threshold step whose value is <= it. The conventions put a
band's edge in the better band (250 ms start-up is acceptable), so a step that starts a worse band
sits a hair above the edge (``_EPSILON``) for lower-is-better quantities; for higher-is-better ones
the better band starts a hair above its edge (85 % is acceptable, 85.000001 % optimal).
"""

from __future__ import annotations

from typing import Any

from qm_otel.conventions import Band, Conventions

__all__ = ["COLOURS", "band_thresholds", "service_dashboard"]

COLOURS = {"optimal": "green", "acceptable": "yellow", "warning": "orange", "error": "red"}
_EPSILON = 1e-6
_PROM = {"type": "prometheus", "uid": "prometheus"}
_LOKI = {"type": "loki", "uid": "loki"}
_TEMPO = {"type": "tempo", "uid": "tempo"}
_SERVICE = 'job="$service"'


def band_thresholds(band: Band, scale: float = 1.0) -> dict[str, Any]:
    """Grafana threshold steps reproducing ``band`` exactly (values multiplied by ``scale``)."""
    if band.better == "lower":
        steps = [
            {"color": COLOURS["optimal"], "value": None},
            {"color": COLOURS["acceptable"], "value": band.optimal * scale},
            {"color": COLOURS["warning"], "value": band.acceptable * scale + _EPSILON},
            {"color": COLOURS["error"], "value": band.warning * scale + _EPSILON},
        ]
    else:
        steps = [
            {"color": COLOURS["error"], "value": None},
            {"color": COLOURS["warning"], "value": band.warning * scale},
            {"color": COLOURS["acceptable"], "value": band.acceptable * scale},
            {"color": COLOURS["optimal"], "value": band.optimal * scale + _EPSILON},
        ]
    return {"mode": "absolute", "steps": steps}


class _Layout:
    """Hands out panel ids and grid positions, two panels of width 12 per row."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0

    def place(self, width: int = 12, height: int = 8) -> tuple[int, dict[str, int]]:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + height
        position = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        panel_id, self.next_id = self.next_id, self.next_id + 1
        return panel_id, position


def _panel(layout: _Layout, kind: str, title: str, targets: list[dict[str, Any]], *, unit: str = "short",
           thresholds: dict[str, Any] | None = None, width: int = 12, datasource: dict[str, str] = _PROM,
           description: str = "") -> dict[str, Any]:
    panel_id, grid = layout.place(width)
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds is not None:
        defaults["thresholds"] = thresholds
        defaults["color"] = {"mode": "thresholds"}
    panel: dict[str, Any] = {
        "id": panel_id, "type": kind, "title": title, "description": description, "gridPos": grid,
        "datasource": datasource, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if kind == "timeseries" and thresholds is not None:
        defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
    return panel


def _prom(expr: str, legend: str = "", *, exemplar: bool = False) -> dict[str, Any]:
    return {"datasource": _PROM, "expr": expr, "legendFormat": legend, "refId": "A", "exemplar": exemplar}


def _rate(metric: str, matchers: str = "") -> str:
    """``rate(metric{job="$service",<matchers>}[$__rate_interval])``."""
    selector = f"{_SERVICE},{matchers}" if matchers else _SERVICE
    return f"rate({metric}{{{selector}}}[$__rate_interval])"


def service_dashboard(c: Conventions) -> dict[str, Any]:
    """One service at a glance: traffic, errors, latency, cache, memory, start-up, breakers, logs, traces."""
    layout = _Layout()
    requests = _rate("http_server_request_duration_seconds_count")
    server_errors = _rate("http_server_request_duration_seconds_count", 'http_response_status_code=~"5.."')
    p95 = f"1000 * histogram_quantile(0.95, sum by (le) ({_rate('http_server_request_duration_seconds_bucket')}))"
    hits = _rate("qm_otel_cache_requests_total", 'result="hit"')
    lookups = _rate("qm_otel_cache_requests_total")
    alerts = c.alerts
    error_thresholds = {"mode": "absolute", "steps": [
        {"color": "green", "value": None}, {"color": "red", "value": alerts["error_rate_percent_above"] + _EPSILON}]}
    panels = [
        _panel(layout, "timeseries", "Requests per second by route",
               [_prom(f"sum by (http_route) ({requests})", "{{http_route}}")], unit="reqps"),
        _panel(layout, "timeseries", "Error rate (5xx)",
               [_prom(f"100 * sum({server_errors}) / sum({requests})", "errors")],
               unit="percent", thresholds=error_thresholds,
               description=f"Alert above {alerts['error_rate_percent_above']:g} %."),
        _panel(layout, "timeseries", "Response time p95 (exemplars open traces)",
               [_prom(p95, "p95", exemplar=True)], unit="ms",
               thresholds=band_thresholds(c.bands["response_time"]),
               description="Bands: " + _describe(c.bands["response_time"])),
        _panel(layout, "timeseries", "Cache hit rate",
               [_prom(f"100 * (sum by (cache) ({hits}) or sum by (cache) ({lookups}) * 0) / sum by (cache) ({lookups})",
                      "{{cache}}")],
               unit="percent", thresholds=band_thresholds(c.bands["cache_hit_rate"]),
               description="Bands: " + _describe(c.bands["cache_hit_rate"])),
        _panel(layout, "timeseries", "Resident memory",
               [_prom(f"max by (instance) (process_memory_usage_bytes{{{_SERVICE}}}) / 1048576", "{{instance}}")],
               unit="decmbytes", thresholds=band_thresholds(c.bands["memory"]),
               description="MB = 2^20 bytes. Bands: " + _describe(c.bands["memory"])),
        _panel(layout, "stat", "Start-up (setup) duration",
               [_prom(f"max(qm_otel_startup_duration_seconds{{{_SERVICE}}}) * 1000", "ms")], unit="ms",
               thresholds=band_thresholds(c.bands["bootstrap"]), width=6,
               description="Bands: " + _describe(c.bands["bootstrap"])),
        _panel(layout, "stat", "Degraded mode", [_prom(f"max(qm_otel_degraded{{{_SERVICE}}})", "degraded")],
               thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                         {"color": "orange", "value": 1}]}, width=6),
        _panel(layout, "state-timeline", "Circuit breakers",
               [_prom(f'max by (breaker, state) (qm_otel_breaker_state{{{_SERVICE}}}) == 1', "{{breaker}} {{state}}")],
               description=(f"{c.breaker.failure_threshold} failures in {c.breaker.window_s:g} s open a breaker; "
                            f"a trial call follows after {c.breaker.recovery_s:g} s.")),
        _panel(layout, "logs", "Logs (trace_id links to Tempo)",
               [{"datasource": _LOKI, "expr": '{service_name="$service"}', "refId": "A"}], width=24,
               datasource=_LOKI),
        _panel(layout, "table", "Recent traces",
               [{"datasource": _TEMPO, "queryType": "traceql", "query": '{resource.service.name="$service"}',
                 "limit": 20, "refId": "A"}], width=24, datasource=_TEMPO),
    ]
    return {
        "uid": "qm-otel-service",
        "title": "qm-otel service",
        "tags": ["qm-otel", "generated"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "description": "Generated by `qm-otel render` from src/qm_otel/conventions.toml: do not edit by hand.",
        "templating": {"list": [{
            "name": "service", "label": "service", "type": "query", "datasource": _PROM,
            "query": {"query": "label_values(http_server_request_duration_seconds_count, job)", "refId": "service"},
            "definition": "label_values(http_server_request_duration_seconds_count, job)",
            "refresh": 2, "includeAll": False, "multi": False, "current": {},
        }]},
        "panels": panels,
    }


def _describe(band: Band) -> str:
    if band.better == "lower":
        return (f"optimal < {band.optimal:g} {band.unit}, acceptable ≤ {band.acceptable:g}, "
                f"warning ≤ {band.warning:g}, error above.")
    return (f"optimal > {band.optimal:g} {band.unit}, acceptable ≥ {band.acceptable:g}, "
            f"warning ≥ {band.warning:g}, error below.")
