"""Circuit breakers: state over time per breaker, transitions, rejected calls, failures, flapping.

The transition table, the breaker defaults and the flapping rule (openings within a window) come
from the conventions, so the panels and the alert rules speak of the same numbers.
"""

from __future__ import annotations

from typing import Any

from qm_otel.cli.render.dashboards.board import dashboard, service_variable
from qm_otel.cli.render.dashboards.panels import (
    COLOURS,
    Layout,
    Panel,
    panel,
    prom,
    rate,
    selector,
    text_panel,
)
from qm_otel.core.conventions import Conventions

__all__ = ["STATE_CODES", "UID", "breakers"]

UID = "qm-otel-breakers"
#: the state-timeline's encoding of a breaker's state, and the band colour each state is shown in
STATE_CODES = {"CLOSED": (0, "optimal"), "HALF_OPEN": (1, "warning"), "OPEN": (2, "error")}
_STATE = "qm_otel_breaker_state"
_CALLS = "qm_otel_breaker_calls_total"
_TRANSITIONS = "qm_otel_breaker_transitions_total"


def _eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def _state_code() -> str:
    """Per breaker: 0 CLOSED, 1 HALF_OPEN, 2 OPEN (from the one-series-per-state gauge)."""
    terms = [f"{code} * max by (breaker) ({selector(_STATE, _eq('state', state))})"
             for state, (code, _) in STATE_CODES.items() if code]
    return " + ".join(terms)


def _mappings() -> list[dict[str, Any]]:
    return [{"type": "value", "options": {
        str(code): {"text": state, "color": COLOURS[band], "index": code}
        for state, (code, band) in STATE_CODES.items()}}]


def _rules_text(c: Conventions) -> str:
    b = c.breaker
    rows = "\n".join(f"| {t.source} → {t.target} | {t.level} | {t.status} | {t.message} |"
                     for t in b.transitions.values())
    return (f"Defaults: **{b.failure_threshold} failures within {b.window_s:g} s** open a breaker; after "
            f"**{b.recovery_s:g} s** one trial call decides (configurable per breaker). While OPEN, calls are "
            "rejected at once.\n\n| transition | log level | status | message |\n|---|---|---|---|\n" + rows)


def _state(layout: Layout, c: Conventions) -> list[Panel]:
    open_now = f"count(max by (breaker) ({selector(_STATE, _eq('state', 'OPEN'))}) == 1) or vector(0)"
    return [
        panel(layout, "state-timeline", "State per breaker", [prom(_state_code(), "{{breaker}}")], width=24,
              height=7, mappings=_mappings(),
              options={"showValue": "never", "mergeValues": True, "alignValue": "left", "rowHeight": 0.8},
              custom={"fillOpacity": 80, "lineWidth": 0},
              description="CLOSED (calls pass), HALF_OPEN (one trial call), OPEN (calls rejected)."),
        panel(layout, "stat", "Breakers open now", [prom(open_now, "open")], width=6, height=6,
              thresholds={"mode": "absolute", "steps": [{"color": COLOURS["optimal"], "value": None},
                                                        {"color": COLOURS["error"], "value": 1}]}),
        text_panel(layout, "Breaker rules (conventions)", _rules_text(c), width=18, height=6),
    ]


def _calls(layout: Layout) -> list[Panel]:
    bars = {"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}}
    return [
        panel(layout, "timeseries", "Transitions",
              [prom(f"sum by (breaker, from, to) (increase({selector(_TRANSITIONS)}[$__rate_interval]))",
                    "{{breaker}}: {{from}} → {{to}}")], width=12, custom=bars,
              description="State changes per interval, by breaker and transition."),
        panel(layout, "timeseries", "Rejected calls (breaker open)",
              [prom(f"sum by (breaker) ({rate(_CALLS, _eq('outcome', 'rejected'))})", "{{breaker}}")], unit="cps",
              width=12, description="Calls refused without calling the dependency (CircuitOpenError)."),
        panel(layout, "timeseries", "Failed calls",
              [prom(f"sum by (breaker) ({rate(_CALLS, _eq('outcome', 'failure'))})", "{{breaker}}")], unit="cps",
              width=12, description="Admitted calls that raised a failure exception or exceeded the call timeout."),
        panel(layout, "timeseries", "Calls by outcome",
              [prom(f"sum by (breaker, outcome) ({rate(_CALLS)})", "{{breaker}}: {{outcome}}")], unit="cps",
              width=12, custom={"stacking": {"mode": "normal"}, "fillOpacity": 30}),
    ]


def _flapping(layout: Layout, c: Conventions) -> list[Panel]:
    opened = c.breaker.transitions[("CLOSED", "OPEN")]
    policy = c.alert_policy
    window = f"{policy.breaker_flap_window_minutes}m"
    matchers = f"{_eq('from', opened.source)},{_eq('to', opened.target)}"
    openings = f"sum by (breaker) (increase({selector(_TRANSITIONS, matchers)}[{window}]))"
    return [
        panel(layout, "timeseries", f"Openings per breaker within {window} (flapping)", [prom(openings, "{{breaker}}")],
              width=24, thresholds={"mode": "absolute", "steps": [
                  {"color": COLOURS["optimal"], "value": None},
                  {"color": COLOURS["error"], "value": policy.breaker_flap_openings}]},
              description=(f"{opened.source} → {opened.target} transitions within the last {window}. At "
                           f"{policy.breaker_flap_openings} or more the breaker is flapping: the dependency "
                           "fails intermittently, each trial call lets traffic through and it opens again.")),
    ]


def breakers(c: Conventions) -> dict[str, Any]:
    """Every circuit breaker of one service: its state, transitions, calls and whether it flaps."""
    layout = Layout()
    panels = [*_state(layout, c), *_calls(layout), *_flapping(layout, c)]
    return dashboard(UID, "Circuit breakers of one service: state, transitions, calls, flapping.", panels,
                     [service_variable()])
