"""The standard instruments: process memory, cache hits and misses, the degraded flag.

| instrument (OTel)            | Prometheus name                     | what                                   |
|------------------------------|-------------------------------------|----------------------------------------|
| ``process.memory.usage``     | ``process_memory_usage_bytes``      | resident set size (RSS), bytes         |
| ``qm_otel.startup.duration`` | ``qm_otel_startup_duration_seconds``| ``setup()`` duration, attribute band   |
| ``qm_otel.cache.requests``   | ``qm_otel_cache_requests_total``    | lookups by ``cache`` and ``result``    |
| ``qm_otel.cache.hit_ratio``  | ``qm_otel_cache_hit_ratio``         | hit ratio over the last lookups (0-1)  |
| ``qm_otel.degraded``         | ``qm_otel_degraded``                | 1 while in degraded mode               |

The cache hit rate over time is ``sum(rate(qm_otel_cache_requests_total{result="hit"}[5m])) /
sum(rate(qm_otel_cache_requests_total[5m]))``; the error rate comes from the HTTP server histogram's
count by ``http_response_status_code``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable

from opentelemetry import metrics

from qm_otel.conventions import conventions

__all__ = ["cache_hit", "cache_miss", "degraded", "register_standard_instruments", "resident_memory_bytes"]

_logger = logging.getLogger("qm_otel.metrics")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_bytes() -> int | None:
    """The resident set size of the process, from ``/proc/self/statm`` (Linux), or None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


@functools.cache
def _cache_requests() -> metrics.Counter:
    # created once; through the API's proxy meter it reaches the provider setup() installs later
    return metrics.get_meter("qm_otel").create_counter(
        "qm_otel.cache.requests", unit="{request}", description="Cache lookups by cache and result")


class _Caches:
    """Per-cache sliding windows of hits and misses, and the degraded-mode rule over them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, deque[bool]] = {}
        self._degraded: set[str] = set()

    def record(self, cache: str, hit: bool) -> None:
        rule = conventions().degradation
        with self._lock:
            window = self._windows.setdefault(cache, deque(maxlen=rule.window))
            window.append(hit)
            ratio = sum(window) / len(window)
            enough = len(window) >= rule.min_lookups
            entering = enough and ratio * 100 < rule.cache_hit_rate_below and cache not in self._degraded
            leaving = enough and ratio * 100 >= rule.cache_hit_rate_below and cache in self._degraded
            if entering:
                self._degraded.add(cache)
            elif leaving:
                self._degraded.discard(cache)
        _cache_requests().add(1, {"cache": cache, "result": "hit" if hit else "miss"})
        if entering or leaving:
            from qm_otel.events import event

            event("CACHE", "degraded_mode" if entering else "recovered",
                  "DEGRADED" if entering else "SUCCESS",
                  message="Entering degraded mode" if entering else "Leaving degraded mode",
                  logger=_logger, cache=cache, hit_rate_percent=round(ratio * 100, 1))

    def ratios(self) -> dict[str, float]:
        with self._lock:
            return {cache: sum(w) / len(w) for cache, w in self._windows.items() if w}

    def degraded(self) -> list[str]:
        with self._lock:
            return sorted(self._degraded)


_CACHES = _Caches()


def cache_hit(cache: str) -> None:
    """Count a hit of the cache called ``cache``."""
    _CACHES.record(cache, True)


def cache_miss(cache: str) -> None:
    """Count a miss of the cache called ``cache``."""
    _CACHES.record(cache, False)


def degraded() -> list[str]:
    """The caches whose hit rate keeps the service in degraded mode (empty: not degraded)."""
    return _CACHES.degraded()


def _memory(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    del options
    rss = resident_memory_bytes()
    return [] if rss is None else [metrics.Observation(rss, {"process.memory.type": "rss"})]


def _hit_ratios(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    del options
    return [metrics.Observation(ratio, {"cache": cache}) for cache, ratio in _CACHES.ratios().items()]


def _degraded_flag(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    del options
    return [metrics.Observation(1 if _CACHES.degraded() else 0)]


def register_standard_instruments(meter_provider: metrics.MeterProvider) -> None:
    """Create the observable instruments on ``meter_provider`` (called once by ``setup()``)."""
    meter = meter_provider.get_meter("qm_otel")
    meter.create_observable_up_down_counter(
        "process.memory.usage", callbacks=[_memory], unit="By", description="Resident memory of the process")
    meter.create_observable_gauge(
        "qm_otel.cache.hit_ratio", callbacks=[_hit_ratios], unit="",  # "1" would append _ratio in Prometheus
        description="Hit ratio over each cache's last lookups")
    meter.create_observable_gauge(
        "qm_otel.degraded", callbacks=[_degraded_flag], unit="", description="1 while in degraded mode")
