"""Process and CPython metrics of each worker process, by the contrib system-metrics instrumentation.

With ``runtime_metrics`` (``QM_OTEL_RUNTIME_METRICS``, on by default) the metrics builder instruments
``opentelemetry-instrumentation-system-metrics`` on the pipeline's meter provider with exactly these
metrics (semantic-conventions names; unit, attributes; the Prometheus name), no attributes where none is said:

- ``process.cpu.time`` (``s``; ``type``: ``user``, ``system``) → ``process_cpu_time_seconds_total``
- ``process.memory.usage`` (``By``, the resident set size) → ``process_memory_usage_bytes``
- ``process.memory.virtual`` (``By``) → ``process_memory_virtual_bytes``
- ``process.thread.count`` → ``process_thread_count``
- ``process.open_file_descriptor.count`` → ``process_open_file_descriptor_count``
- ``process.context_switches`` (``type``: ``voluntary``, ``involuntary``) → ``process_context_switches_total``
- ``cpython.gc.collections`` (``{collection}``; ``cpython.gc.generation``: 0, 1, 2) → ``cpython_gc_collections_total``
- ``cpython.gc.collected_objects`` (``{object}``; same) → ``cpython_gc_collected_objects_total``
- ``cpython.gc.uncollectable_objects`` (``{object}``; same) → ``cpython_gc_uncollectable_objects_total``

(Prometheus names as qm-otel's Prometheus endpoint writes them, with the ``otel_scope_name`` label
``opentelemetry.instrumentation.system_metrics``, and as the collector path names them; one set per
worker, told apart by the resource's ``process.pid`` and ``service.instance.id``.)

Not ``process.cpu.utilization``, which the conventions define too: its unit ``1`` makes the two
Prometheus paths disagree on its name (``process_cpu_utilization`` from the scrape endpoint,
``process_cpu_utilization_ratio`` through the collector), and the instrumentation reads it with
psutil's ``cpu_percent()``, the share since the previous reading, so two readers (``otlp,prometheus``,
or two scrapers) each shorten the other's interval. ``rate(process_cpu_time_seconds_total[5m])``
is the same figure, in CPUs, over a window the dashboard chooses.

The instrumentation also writes the gc metrics' old ``generation`` attribute, the same number as a
string, "until a few releases after 1.40.0": :func:`views` keeps only ``cpython.gc.generation``. Its
``process.cpu.time`` and ``process.context_switches`` name their attribute ``type``, where the
conventions now say ``cpu.mode`` and ``process.context_switch.type``: kept as it writes them.

None of its ``system.*`` metrics nor its deprecated ``process.runtime.*`` ones, which its default
configuration (the one ``opentelemetry-instrument`` would load) reports: qm-otel never loads it
with that configuration, on either launch path (:data:`qm_otel.instrumentation.libraries.WIRED_BY_SETUP` names it).

``process.memory.usage`` is the metric of the memory band and its dashboard panel: exactly one
instrument of that name is made on the provider, the instrumentation's while it reports it, else
qm-otel's own (:func:`qm_otel.core.instruments.observe`, the same RSS, unit and no attributes). So the
series stays ``process_memory_usage_bytes`` whatever the setting.

What turns the rest off: ``runtime_metrics=false``; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` naming
``system_metrics`` (or ``*``), as for every other instrumentation; the instrumentation's own
``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS`` patterns (``process.context_switches,cpython.gc.*``)
leave out the metrics they match. An application that instrumented ``SystemMetricsInstrumentor``
itself before ``setup()`` keeps its own, untouched.

One set per process: ``shutdown()`` uninstruments it (:func:`uninstrument`, from
:meth:`qm_otel.instrumentation.libraries.Instrumentation.close`; the instrumentation's own uninstrument
removes nothing, so the next :func:`install` makes its instruments on the new provider), and a process forked after
``setup()`` reads its own pid (:func:`_after_fork_in_child`): the instrumentation reads one
``psutil.Process`` made when it is constructed, which is made again in the child.

Start-up: importing the instrumentation imports ``opentelemetry.instrumentation``'s instrumentor
base, with ``packaging`` and the instrumentation semantic-conventions helpers, which ``setup()``
otherwise avoids: about 40 ms more for ``setup()`` in code here (psutil itself is imported by the
SDK's process resource detector already). Under ``opentelemetry-instrument`` the wrapper has
imported them before ``setup()``: a few ms.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["CONFIG", "ENTRY_POINT", "MEMORY", "NAMES", "disabled", "install", "installed", "uninstrument", "views"]

_logger = logging.getLogger("qm_otel")

#: the instrumentation's ``opentelemetry_instrumentor`` entry point
ENTRY_POINT = "system_metrics"
#: the metric the memory band reads
MEMORY = "process.memory.usage"
#: the instrumentation's configuration: metric → the values of its attribute it reports (None: no attribute)
CONFIG: Mapping[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    MEMORY: None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
    "process.context_switches": ["voluntary", "involuntary"],
    "cpython.gc.collections": None,
    "cpython.gc.collected_objects": None,
    "cpython.gc.uncollectable_objects": None,
}
NAMES = frozenset(CONFIG)
_DISABLED = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
_EXCLUDED = "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS"

_SCOPE = "opentelemetry.instrumentation.system_metrics"
_GC_METRICS = ("cpython.gc.collections", "cpython.gc.collected_objects", "cpython.gc.uncollectable_objects")
#: the instrumentor qm-otel instrumented (a process-wide singleton), and the configuration it was given
_instrumentor: Any = None
_config: dict[str, list[str] | None] = {}


def disabled(environ: Mapping[str, str]) -> bool:
    """Whether ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names the instrumentation, or ``*`` (the wrapper's rule)."""
    names = {name.strip() for name in environ.get(_DISABLED, "").split(",")}
    return ENTRY_POINT in names or "*" in names


def config(environ: Mapping[str, str]) -> dict[str, list[str] | None]:
    """:data:`CONFIG` less what ``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS`` excludes (its patterns, fnmatch).

    The ``cpython.*`` metrics on CPython only (on PyPy the instrumentation logs a WARNING for each instead).
    """
    patterns = [pattern.strip() for pattern in environ.get(_EXCLUDED, "").split(",") if pattern.strip()]
    if sys.implementation.name != "cpython":
        patterns.append("cpython.*")
    return {name: None if values is None else list(values) for name, values in CONFIG.items()
            if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)}


def views() -> list[Any]:
    """The meter provider's views for these metrics: the gc metrics with the conventions' attribute only."""
    from opentelemetry.sdk.metrics.view import View

    return [View(instrument_name=name, meter_name=_SCOPE, attribute_keys={"cpython.gc.generation"})
            for name in _GC_METRICS]


def install(meter_provider: Any, *, enabled: bool, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Instrument the process and CPython metrics on ``meter_provider``; the names of the metrics it reports.

    Empty when off (``enabled`` false, the instrumentation disabled or every metric excluded), when the
    application instrumented it itself, or when it cannot be imported (psutil built for another
    platform, in an injected image: one WARNING). Instrumented again (on this provider) if qm-otel
    had instrumented it before.
    """
    environ = os.environ if environ is None else environ
    chosen = config(environ) if enabled and not disabled(environ) else {}
    if not chosen:
        return frozenset()
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    except ImportError as exc:
        _logger.warning("qm-otel: no process and runtime metrics (the system-metrics instrumentation cannot be "
                        "imported: %s); process.memory.usage is qm-otel's own", exc)
        return frozenset()
    global _instrumentor, _config  # the one instrumentor of the process
    singleton = SystemMetricsInstrumentor.__new__(SystemMetricsInstrumentor)  # the instance, not constructed again
    if singleton.is_instrumented_by_opentelemetry:
        if singleton is not _instrumentor:
            return frozenset()  # the application's own
        singleton.uninstrument()
    _instrumentor, _config = SystemMetricsInstrumentor(config=chosen), chosen  # its psutil.Process: this pid
    _instrumentor.instrument(meter_provider=meter_provider, skip_dep_check=True)  # psutil: qm-otel's dependency
    return frozenset(chosen)


def installed() -> frozenset[str]:
    """The names of the metrics the instrumentation qm-otel instrumented reports now (empty when none)."""
    if _instrumentor is None or not _instrumentor.is_instrumented_by_opentelemetry:
        return frozenset()
    return frozenset(_config)


def uninstrument() -> None:
    """At ``shutdown()``: mark the instrumentation uninstrumented, so the next :func:`install` instruments it again.

    (Its instruments stay on the closed provider, which collects nothing any more.)
    """
    global _instrumentor
    instrumentor, _instrumentor = _instrumentor, None
    if instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def _after_fork_in_child() -> None:
    """In a forked child: the instrumentation's ``psutil.Process`` made again, for the child's pid.

    The instrumentor is a singleton whose callbacks read what its constructor made; constructing it
    again (same configuration) gives the instruments already on the provider the child's readings.
    """
    instrumentor = _instrumentor
    if instrumentor is None or not instrumentor.is_instrumented_by_opentelemetry:
        return
    try:
        type(instrumentor)(config=_config)
    except Exception:  # a child never fails because of telemetry
        _logger.exception("qm-otel: the forked process's runtime metrics could not be set to its own pid")


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
