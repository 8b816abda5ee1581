"""Telemetry dropped by a full batch queue is counted (``qm_otel.telemetry.dropped``), not just logged.

The SDK's batch processors drop an item when their queue is full and log "Queue full, dropping …"
each time, through a logger whose duplicate filter lets one line through every 20 seconds. qm-otel
puts a filter ahead of that one which counts every drop, by signal, in a metric; the line itself is
still reported as the SDK reports it (once per 20 s), and qm-otel's log handler writes it to stdout
without feeding it back into the full log queue.
"""

from __future__ import annotations

import logging

from qm_otel import instruments

__all__ = ["SDK_BATCH_LOGGER", "count_dropped"]

#: the logger of the SDK's shared batch processor (spans and log records)
SDK_BATCH_LOGGER = "opentelemetry.sdk._shared_internal"
_SIGNALS = {"span": "traces", "log": "logs"}


class _CountDrops(logging.Filter):
    """Counts each "Queue full, dropping …" record; lets every record on to the SDK's own filter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Queue full, dropping %s." and record.args:
            exporting = str(record.args[0] if isinstance(record.args, tuple) else record.args).lower()
            instruments.current().telemetry_dropped.add(1, {"signal": _SIGNALS.get(exporting, exporting),
                                                            "reason": "queue_full"})
        return True


def count_dropped() -> None:
    """Put the counting filter first on the SDK's batch-processor logger (once per process)."""
    logger = logging.getLogger(SDK_BATCH_LOGGER)
    if not any(isinstance(f, _CountDrops) for f in logger.filters):
        logger.filters.insert(0, _CountDrops())  # ahead of the SDK's duplicate filter, which drops repeats
