"""The five Grafana dashboards ``qm-otel render`` generates from the conventions data.

Small hand-written builders (``panels``, ``board``) and one module per dashboard; the choice over
grafana-foundation-sdk is recorded in docs/SYSTEM_LOG.md. Each dashboard has a fixed UID, the
``service`` variable (label ``service_name``) and links to the other four.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from qm_otel.cli.render.dashboards.board import BOARDS
from qm_otel.cli.render.dashboards.breakers import breakers
from qm_otel.cli.render.dashboards.logs_traces import logs_traces
from qm_otel.cli.render.dashboards.overview import overview
from qm_otel.cli.render.dashboards.panels import COLOURS, band_thresholds
from qm_otel.cli.render.dashboards.performance import performance
from qm_otel.cli.render.dashboards.pipeline import pipeline
from qm_otel.core.conventions import Conventions

__all__ = ["BOARDS", "COLOURS", "DASHBOARDS", "band_thresholds", "dashboard_files"]

#: repository-relative file → the function that builds it (the first keeps the original file and UID)
DASHBOARDS: dict[str, Callable[[Conventions], dict[str, Any]]] = {
    "dashboards/qm-otel-service.json": overview,
    "dashboards/qm-otel-logs-traces.json": logs_traces,
    "dashboards/qm-otel-breakers.json": breakers,
    "dashboards/qm-otel-conventions.json": performance,
    "dashboards/qm-otel-pipeline.json": pipeline,
}


def dashboard_files(c: Conventions) -> dict[str, str]:
    """Every dashboard file: repository-relative path → its JSON text."""
    return {path: json.dumps(build(c), indent=2, ensure_ascii=False) + "\n" for path, build in DASHBOARDS.items()}
