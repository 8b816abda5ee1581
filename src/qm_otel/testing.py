"""Test helpers for qm-otel users and for qm-otel's own tests: capture telemetry in memory, reset.

>>> capture = Capture()
>>> telemetry = qm_otel.setup(traces_exporter="none", **capture.setup_kwargs())  # doctest: +SKIP
>>> capture.spans.get_finished_spans()                                            # doctest: +SKIP
>>> reset()   # between tests: the next setup() builds a fresh pipeline            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import qm_otel

__all__ = ["Capture", "reset"]


@dataclass
class Capture:
    """In-memory exporters for all three signals, from the SDK, ready to hand to ``setup()``."""

    spans: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    logs: InMemoryLogRecordExporter = field(default_factory=InMemoryLogRecordExporter)
    metrics: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def setup_kwargs(self) -> dict[str, Any]:
        """``span_processors``, ``log_processors`` and ``metric_readers`` for :func:`qm_otel.setup`."""
        return {
            "span_processors": [SimpleSpanProcessor(self.spans)],
            "log_processors": [SimpleLogRecordProcessor(self.logs)],
            "metric_readers": [self.metrics],
        }


def reset(timeout_s: float = 5.0) -> None:
    """Shut the running pipeline down (flushed, bounded by ``timeout_s``) and clear qm-otel's state.

    For tests that call :func:`qm_otel.setup` in-process: after ``reset()`` the next ``setup()``
    builds a fresh pipeline with the settings it is given (compare structlog's ``reset_defaults``).
    """
    qm_otel.shutdown(timeout_s)
