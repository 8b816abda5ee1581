"""Cache hits and misses, and the degraded mode the conventions derive from them.

>>> cache_hit("profiles"); cache_miss("profiles")          # doctest: +SKIP

Each cache keeps a sliding window of its last lookups; when the hit rate over a full enough
window falls below the conventions' trigger (60 %), the service enters degraded mode ("Entering
degraded mode", WARNING) until the rate recovers. Lookups are counted in
``qm_otel.cache.requests``; the ratio per cache and the degraded flag are observed by the
metrics pipeline (:func:`ratio_observations`, :func:`degraded_observations`). The cache hit rate
over time is ``sum(rate(qm_otel_cache_requests_total{result="hit"}[5m])) /
sum(rate(qm_otel_cache_requests_total[5m]))``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable

from opentelemetry import metrics

from qm_otel.core import instruments
from qm_otel.core.conventions import conventions
from qm_otel.runtime.events import event

__all__ = ["cache_hit", "cache_miss", "degraded", "degraded_observations", "ratio_observations"]

_logger = logging.getLogger("qm_otel.metrics")


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
        instruments.current().cache_requests.add(1, {"cache": cache, "result": "hit" if hit else "miss"})
        if entering or leaving:
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


def ratio_observations(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    """``qm_otel.cache.hit_ratio``: one observation per cache."""
    del options
    return [metrics.Observation(ratio, {"cache": cache}) for cache, ratio in _CACHES.ratios().items()]


def degraded_observations(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    """``qm_otel.degraded``: 1 while any cache keeps the service degraded."""
    del options
    return [metrics.Observation(1 if _CACHES.degraded() else 0)]
