"""Every instrument qm-otel records, made in one place, one way: from the pipeline's meter provider.

| instrument (OTel)               | Prometheus name                        | what                                    |
|---------------------------------|----------------------------------------|-----------------------------------------|
| ``process.memory.usage``        | ``process_memory_usage_bytes``         | resident set size (RSS), bytes (*)      |
| ``qm_otel.startup.duration``    | ``qm_otel_startup_duration_seconds``   | ``setup()`` duration, attribute band    |
| ``qm_otel.cache.requests``      | ``qm_otel_cache_requests_total``       | lookups by ``cache`` and ``result``     |
| ``qm_otel.cache.hit_ratio``     | ``qm_otel_cache_hit_ratio``            | hit ratio over the last lookups (0-1)   |
| ``qm_otel.degraded``            | ``qm_otel_degraded``                   | 1 while in degraded mode                |
| ``qm_otel.breaker.calls``       | ``qm_otel_breaker_calls_total``        | calls through breakers, by outcome      |
| ``qm_otel.breaker.transitions`` | ``qm_otel_breaker_transitions_total``  | breaker state changes                   |
| ``qm_otel.breaker.state``       | ``qm_otel_breaker_state``              | 1 for the current state, 0 for others   |
| ``qm_otel.timed.duration``      | ``qm_otel_timed_duration_seconds``     | work wrapped in ``qm_otel.timed``       |
| ``qm_otel.events.invalid``      | ``qm_otel_events_invalid_total``       | events naming an unknown component      |
| ``qm_otel.correlation.rejected``| ``qm_otel_correlation_rejected_total`` | incoming IDs rejected, by reason        |
| ``qm_otel.telemetry.dropped``   | ``qm_otel_telemetry_dropped_total``    | items dropped, by signal and reason     |
| ``qm_otel.telemetry.retried``   | ``qm_otel_telemetry_retried_total``    | items delivered after a failed attempt  |
| ``qm_otel.event_loop.lag``      | ``qm_otel_event_loop_lag_seconds``     | how late the loop ran its heartbeat     |
| ``qm_otel.event_loop.blocked``  | ``qm_otel_event_loop_blocked_total``   | stalls over the threshold, by route     |

``setup()`` makes one :class:`Instruments` for its meter provider and keeps it in the state room;
:func:`current` returns it (before ``setup()``: one made on the API's global meter, which forwards
to the provider ``setup()`` installs later). Observable instruments get their callbacks from the
modules that own the observed state (breakers, caches), handed in by the metrics builder.

(*) With runtime metrics on, ``process.memory.usage`` is the system-metrics instrumentation's
(:mod:`qm_otel.runtime.process_metrics`, with the other process and CPython metrics), and :func:`observe` makes
none: one instrument of that name per provider, the same RSS in bytes, no attributes, either way.

Units: no ``"1"`` for ratios and flags, which would make Prometheus append ``_ratio`` to the name.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import _Gauge as Gauge  # the API's synchronous gauge (its public name)

from qm_otel import _state
from qm_otel._version import __version__

__all__ = [
    "CLOSED_PROVIDERS", "EVENT_LOOP_LAG_BUCKETS", "INSTRUMENTS", "Instruments", "Observer", "current", "observe",
    "resident_memory_bytes",
]

#: the event-loop lag histogram's bucket boundaries (seconds; :mod:`qm_otel.runtime.event_loop`)
EVENT_LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
Observer = Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]


@dataclass(frozen=True)
class Instruments:
    """The synchronous instruments, made once per meter provider by :meth:`create`."""

    startup_duration: Gauge
    cache_requests: metrics.Counter
    breaker_calls: metrics.Counter
    breaker_transitions: metrics.Counter
    timed_duration: metrics.Histogram
    events_invalid: metrics.Counter
    correlation_rejected: metrics.Counter
    telemetry_dropped: metrics.Counter
    telemetry_retried: metrics.Counter
    event_loop_lag: metrics.Histogram
    event_loop_blocked: metrics.Counter

    @classmethod
    def create(cls, provider: metrics.MeterProvider) -> Instruments:
        """Make every synchronous instrument on ``provider``'s ``qm_otel`` meter."""
        meter = provider.get_meter("qm_otel", __version__)
        return cls(
            startup_duration=meter.create_gauge(
                "qm_otel.startup.duration", unit="s", description="Duration of qm_otel.setup(), classified by band"),
            cache_requests=meter.create_counter(
                "qm_otel.cache.requests", unit="{request}", description="Cache lookups by cache and result"),
            breaker_calls=meter.create_counter(
                "qm_otel.breaker.calls", unit="{call}", description="Calls through circuit breakers, by outcome"),
            breaker_transitions=meter.create_counter(
                "qm_otel.breaker.transitions", unit="{transition}", description="Circuit-breaker state changes"),
            timed_duration=meter.create_histogram(
                "qm_otel.timed.duration", unit="s", description="Duration of work wrapped in qm_otel.timed"),
            events_invalid=meter.create_counter(
                "qm_otel.events.invalid", unit="{event}", description="Events with an unknown component or status"),
            correlation_rejected=meter.create_counter(
                "qm_otel.correlation.rejected", unit="{id}",
                description="Incoming correlation IDs rejected and replaced by a new ID, by reason"),
            telemetry_dropped=meter.create_counter(
                "qm_otel.telemetry.dropped", unit="{item}",
                description="Telemetry items dropped before export, by signal and reason"),
            telemetry_retried=meter.create_counter(
                "qm_otel.telemetry.retried", unit="{item}",
                description="Telemetry items delivered after at least one failed attempt, by signal"),
            event_loop_lag=meter.create_histogram(
                "qm_otel.event_loop.lag", unit="s",
                description="How late the event loop ran a heartbeat scheduled on it",
                explicit_bucket_boundaries_advisory=EVENT_LOOP_LAG_BUCKETS),
            event_loop_blocked=meter.create_counter(
                "qm_otel.event_loop.blocked", unit="{stall}",
                description="Stalls of the event loop longer than the watchdog's threshold"),
        )


#: the running pipeline's instruments (set by ``setup()``, emptied by ``shutdown()``)
INSTRUMENTS: _state.Slot[Instruments] = _state.Slot("instruments")


def observe(
    provider: metrics.MeterProvider, *, breaker_states: Observer, cache_ratios: Observer, degraded: Observer,
    memory: bool = True,
) -> None:
    """Make the observable instruments on ``provider``, with the callbacks of the state they observe.

    ``memory``: ``process.memory.usage`` too (False when the runtime metrics report it).
    """
    meter = provider.get_meter("qm_otel", __version__)
    if memory:
        meter.create_observable_up_down_counter(
            "process.memory.usage", callbacks=[_memory], unit="By", description="The amount of physical memory in use.")
    meter.create_observable_gauge(
        "qm_otel.cache.hit_ratio", callbacks=[cache_ratios], unit="",
        description="Hit ratio over each cache's last lookups")
    meter.create_observable_gauge(
        "qm_otel.degraded", callbacks=[degraded], unit="", description="1 while in degraded mode")
    meter.create_observable_gauge(
        "qm_otel.breaker.state", callbacks=[breaker_states], unit="",
        description="1 for the breaker's current state, 0 for the others (one series per state)")


#: the providers qm-otel built that ``shutdown()`` has closed (:mod:`qm_otel.signals.global_providers`); weak,
#: so a provider nobody holds goes, and nothing is written on the SDK's objects
CLOSED_PROVIDERS: weakref.WeakSet[object] = weakref.WeakSet()


@functools.cache
def _before_setup() -> Instruments:
    return Instruments.create(metrics.get_meter_provider())


@functools.cache
def _after_shutdown() -> Instruments:
    """No-op instruments: a closed SDK provider answers every ``get_meter`` with a warning line."""
    return Instruments.create(metrics.NoOpMeterProvider())


def current() -> Instruments:
    """The instruments of the running pipeline (one state read on the hot path)."""
    running = INSTRUMENTS.get()
    if running is not None:
        return running
    if metrics.get_meter_provider() in CLOSED_PROVIDERS:  # counts made after shutdown()
        return _after_shutdown()
    return _before_setup()


def resident_memory_bytes() -> int | None:
    """The resident set size of the process, from ``/proc/self/statm`` (Linux), or None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _memory(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    del options
    rss = resident_memory_bytes()
    return [] if rss is None else [metrics.Observation(rss)]  # no attributes: as the instrumentation's
