"""Generated dashboards and alert rules: never stale, exact band colours, real promtool checks and tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from qm_otel.cli import main
from qm_otel.cli.render import DASHBOARD, RULE_TESTS, RULES, render_all, stale, write
from qm_otel.cli.render.dashboards import COLOURS, band_thresholds
from qm_otel.cli.render.kubernetes import DASHBOARD_CONFIGMAPS, PROMETHEUS_RULES
from qm_otel.core.conventions import conventions, load_with_overrides
from tests.unit.test_conventions import EDGES

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
# scripts/install installs it; outside CI a developer without it gets a skip, CI never does
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                    reason="promtool (Debian package prometheus) not installed")


def test_committed_files_are_not_stale() -> None:
    assert stale(ROOT) == [], "run `qm-otel render` and commit the result"
    assert main(["render", "--check", "--root", str(ROOT)]) == 0


def test_a_changed_threshold_makes_them_stale_and_render_fixes_it(tmp_path: Path) -> None:
    write(tmp_path)
    override = tmp_path / "ours.toml"
    override.write_text("[alerts]\nerror_rate_percent_above = 2\n")
    changed = load_with_overrides(str(override))
    # the error-rate line is drawn on the service overview and the performance-conventions dashboard; the
    # Kubernetes forms of the rules and the dashboards follow (the collector values do not use it)
    assert set(stale(tmp_path, changed)) == {RULES, RULE_TESTS, DASHBOARD, "dashboards/qm-otel-conventions.json",
                                             PROMETHEUS_RULES, DASHBOARD_CONFIGMAPS}
    assert "> 2\n" in render_all(changed)[RULES]
    write(tmp_path, changed)
    assert stale(tmp_path, changed) == []


def colour_of(steps: list[dict[str, object]], value: float) -> str:
    """Grafana's rule: the last step whose value is <= the value (the first step has none)."""
    colour = str(steps[0]["color"])
    for step in steps[1:]:
        if value >= float(step["value"]):  # type: ignore[arg-type]
            colour = str(step["color"])
    return colour


@pytest.mark.parametrize(("quantity", "value", "band"), EDGES)
def test_dashboard_colours_reproduce_every_band_edge(quantity: str, value: float, band: str) -> None:
    steps = band_thresholds(conventions().bands[quantity])["steps"]
    assert colour_of(steps, value) == COLOURS[band]
