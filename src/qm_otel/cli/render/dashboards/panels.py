"""Grafana panel and query builders: small functions returning the JSON Grafana stores.

Band colours are the conventions' threshold bands. Grafana colours a value with the last threshold
step whose value is <= it. The conventions put a band's edge in the better band (250 ms start-up is
acceptable), so a step that starts a worse band sits a hair (``_EPSILON`` in the band's own unit,
scaled with it) above the edge for lower-is-better quantities; for higher-is-better ones the better
band starts a hair above its edge (85 % is acceptable, 85.000001 % optimal).

Queries use only the variables ``$service`` (and ``$collector`` on the pipeline dashboard) and
Grafana's ``$__rate_interval`` / ``$__interval`` / ``$__range``, so a test can substitute them and
run every expression against a real Prometheus.
"""

from __future__ import annotations

from typing import Any

from qm_otel.core.conventions import Band

__all__ = [
    "COLOURS",
    "LOKI",
    "PROMETHEUS",
    "SERVICE",
    "TEMPO",
    "Layout",
    "Panel",
    "alert_thresholds",
    "band_thresholds",
    "describe",
    "logs_panel",
    "loki",
    "panel",
    "prom",
    "rate",
    "selector",
    "tempo",
    "text_panel",
    "traces_panel",
]

Panel = dict[str, Any]
COLOURS = {"optimal": "green", "acceptable": "yellow", "warning": "orange", "error": "red"}
_EPSILON = 1e-6
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}
TEMPO = {"type": "tempo", "uid": "tempo"}
#: every application series is filtered on the service (label ``service_name``, from ``service.name``)
SERVICE = 'service_name=~"$service"'
_REF_IDS = "ABCDEFGHIJ"


def band_thresholds(band: Band, scale: float = 1.0) -> dict[str, Any]:
    """Grafana threshold steps reproducing ``band`` exactly (values multiplied by ``scale``)."""
    if band.better == "lower":
        steps = [
            {"color": COLOURS["optimal"], "value": None},
            {"color": COLOURS["acceptable"], "value": band.optimal * scale},
            {"color": COLOURS["warning"], "value": (band.acceptable + _EPSILON) * scale},
            {"color": COLOURS["error"], "value": (band.warning + _EPSILON) * scale},
        ]
    else:
        steps = [
            {"color": COLOURS["error"], "value": None},
            {"color": COLOURS["warning"], "value": band.warning * scale},
            {"color": COLOURS["acceptable"], "value": band.acceptable * scale},
            {"color": COLOURS["optimal"], "value": (band.optimal + _EPSILON) * scale},
        ]
    return {"mode": "absolute", "steps": steps}


def alert_thresholds(above: float) -> dict[str, Any]:
    """Two steps for a quantity with only an alert line (error rate): optimal up to ``above``, error past it."""
    return {"mode": "absolute", "steps": [{"color": COLOURS["optimal"], "value": None},
                                          {"color": COLOURS["error"], "value": above + _EPSILON}]}


def describe(band: Band) -> str:
    """The band edges in words, for a panel's description."""
    if band.better == "lower":
        return (f"Bands: optimal < {band.optimal:g} {band.unit}, acceptable ≤ {band.acceptable:g}, "
                f"warning ≤ {band.warning:g}, error above.")
    return (f"Bands: optimal > {band.optimal:g} {band.unit}, acceptable ≥ {band.acceptable:g}, "
            f"warning ≥ {band.warning:g}, error below.")


class Layout:
    """Hands out panel ids and grid positions, left to right, wrapping at Grafana's 24 columns."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def place(self, width: int, height: int) -> tuple[int, dict[str, int]]:
        """The next panel id and its ``gridPos``."""
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        position = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        panel_id, self.next_id = self.next_id, self.next_id + 1
        return panel_id, position


def selector(metric: str, matchers: str = "", *, scope: str = SERVICE) -> str:
    """``metric{<scope>,<matchers>}``."""
    return f"{metric}{{{scope},{matchers}}}" if matchers else f"{metric}{{{scope}}}"


def rate(metric: str, matchers: str = "", *, scope: str = SERVICE) -> str:
    """``rate(metric{<scope>,<matchers>}[$__rate_interval])``."""
    return f"rate({selector(metric, matchers, scope=scope)}[$__rate_interval])"


def prom(expr: str, legend: str = "", *, exemplar: bool = False, instant: bool = False) -> dict[str, Any]:
    """A Prometheus target (the reference id is set by :func:`panel`)."""
    target: dict[str, Any] = {"datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "exemplar": exemplar}
    if instant:
        target.update(instant=True, range=False, format="table")
    return target


def loki(expr: str, legend: str = "") -> dict[str, Any]:
    """A Loki target: a log query, or a metric query (``count_over_time`` ...), over the dashboard's range."""
    return {"datasource": LOKI, "expr": expr, "legendFormat": legend, "queryType": "range"}


def tempo(query: str, *, limit: int = 20) -> dict[str, Any]:
    """A Tempo TraceQL target: a search, or a trace ID (Grafana then opens that one trace)."""
    return {"datasource": TEMPO, "queryType": "traceql", "query": query, "limit": limit, "tableType": "traces"}


def panel(layout: Layout, kind: str, title: str, targets: list[dict[str, Any]], *, unit: str = "short",
          thresholds: dict[str, Any] | None = None, width: int = 12, height: int = 8,
          description: str = "", options: dict[str, Any] | None = None,
          custom: dict[str, Any] | None = None, mappings: list[dict[str, Any]] | None = None) -> Panel:
    """One panel: its datasource is its targets' (all targets of a panel share one datasource)."""
    panel_id, grid = layout.place(width, height)
    defaults: dict[str, Any] = {"unit": unit}
    field_custom = dict(custom or {})
    if thresholds is not None:
        defaults["thresholds"] = thresholds
        defaults["color"] = {"mode": "thresholds"}
        if kind == "timeseries":
            field_custom["thresholdsStyle"] = {"mode": "line+area"}
    if field_custom:
        defaults["custom"] = field_custom
    if mappings:
        defaults["mappings"] = mappings
    result: Panel = {
        "id": panel_id, "type": kind, "title": title, "description": description, "gridPos": grid,
        "datasource": targets[0]["datasource"],
        "targets": [{**target, "refId": _REF_IDS[n]} for n, target in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if options:
        result["options"] = options
    return result


def logs_panel(layout: Layout, title: str, expr: str, *, width: int = 24, height: int = 10,
               description: str = "") -> Panel:
    """Log lines from Loki, newest first, with their structured metadata one click away."""
    return panel(layout, "logs", title, [loki(expr)], width=width, height=height, description=description,
                 options={"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending",
                          "enableLogDetails": True, "dedupStrategy": "none", "prettifyLogMessage": False})


def traces_panel(layout: Layout, title: str, query: str, *, width: int = 24, height: int = 12,
                 description: str = "") -> Panel:
    """One trace (``query`` is a trace ID) drawn as Grafana's trace view."""
    return panel(layout, "traces", title, [tempo(query)], width=width, height=height, description=description)


def text_panel(layout: Layout, title: str, markdown: str, *, width: int = 24, height: int = 4) -> Panel:
    """A Markdown note (no query)."""
    panel_id, grid = layout.place(width, height)
    return {"id": panel_id, "type": "text", "title": title, "gridPos": grid,
            "options": {"mode": "markdown", "content": markdown}}
