"""Run-time services: what an application calls or qm-otel runs beside it while it serves.

Three layers inside, top to bottom:

- :mod:`~qm_otel.runtime.health`: readiness checks (``add_check``), breakers and degraded mode
  included;
- :mod:`~qm_otel.runtime.breaker` (circuit breakers) and :mod:`~qm_otel.runtime.degraded_mode`
  (cache hits and misses, and the degraded mode the conventions derive from them);
- :mod:`~qm_otel.runtime.events` (``event``, ``timed``), :mod:`~qm_otel.runtime.users`
  (``set_user``), :mod:`~qm_otel.runtime.process_metrics` (the process and CPython metrics, the
  contrib system-metrics instrumentation with qm-otel's selection) and
  :mod:`~qm_otel.runtime.event_loop` (the event-loop watchdog).
"""
