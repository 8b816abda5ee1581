"""Issue 25, item 1: the process and CPython metrics, through the contrib system-metrics instrumentation."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from importlib.metadata import EntryPoint
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import qm_otel
from qm_otel.core.sdk_internals import entry_points
from qm_otel.instrumentation import libraries
from qm_otel.launch.distro import QmOtelDistro
from qm_otel.runtime import process_metrics
from qm_otel.testing import Capture, reset

OFF: dict[str, Any] = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none",
                       "log_format": "none"}
NAMES = {"process.cpu.time", "process.memory.usage", "process.memory.virtual",
         "process.thread.count", "process.open_file_descriptor.count", "process.context_switches",
         "cpython.gc.collections", "cpython.gc.collected_objects", "cpython.gc.uncollectable_objects"}
UNITS = {"process.cpu.time": "s", "process.memory.usage": "By",
         "process.memory.virtual": "By", "cpython.gc.collections": "{collection}",
         "cpython.gc.collected_objects": "{object}", "cpython.gc.uncollectable_objects": "{object}"}
SCOPE = "opentelemetry.instrumentation.system_metrics"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS",
                 "QM_OTEL_RUNTIME_METRICS"):
        monkeypatch.delenv(name, raising=False)
    reset()
    yield
    reset()


def _collected(reader: InMemoryMetricReader) -> dict[str, list[tuple[str, str, list[dict[str, Any]], list[float]]]]:
    """Metric name → (scope, unit, each point's attributes, each point's value) per instrument collected."""
    found: dict[str, list[tuple[str, str, list[dict[str, Any]], list[float]]]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = list(metric.data.data_points)
                found.setdefault(metric.name, []).append((
                    scope_metrics.scope.name, metric.unit or "", [dict(p.attributes or {}) for p in points],
                    [float(getattr(p, "value", 0)) for p in points]))
    return found


def _runtime(found: dict[str, Any]) -> set[str]:
    return {name for name in found if name.startswith(("process.", "cpython.", "system."))}


def test_exactly_the_nine_metrics_with_their_units_and_one_memory_instrument() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())
    found = _collected(capture.metrics)
    assert _runtime(found) == NAMES
    assert not [name for name in found if name.startswith(("process.runtime", "system."))]
    assert "process.cpu.utilization" not in found  # its name differs between the two Prometheus paths
    for name in NAMES:
        [(scope, unit, _, _)] = found[name]  # one instrument of each name, memory included
        assert scope == SCOPE
        assert unit == UNITS.get(name, "")
    [(_, _, attributes, values)] = found["process.memory.usage"]
    assert attributes == [{}]  # the band's series: RSS, no attributes
    assert values[0] == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
    assert {frozenset(a) for a in found["cpython.gc.collections"][0][2]} == {frozenset({"cpython.gc.generation"})}
    assert {a["type"] for a in found["process.cpu.time"][0][2]} == {"user", "system"}
    assert process_metrics.installed() == NAMES


def test_off_leaves_only_qm_otels_memory() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, runtime_metrics=False, **capture.setup_kwargs())
    found = _collected(capture.metrics)
    assert _runtime(found) == {"process.memory.usage"}
    [(scope, unit, attributes, values)] = found["process.memory.usage"]
    assert (scope, unit, attributes) == ("qm_otel", "By", [{}])
    assert values[0] > 10 * 1024 * 1024
    assert process_metrics.installed() == frozenset()


@pytest.mark.parametrize("disabled", ["system_metrics", "sqlite3, system_metrics", "*"])
def test_the_disabled_instrumentations_variable_turns_them_off(monkeypatch: pytest.MonkeyPatch,
                                                               disabled: str) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", disabled)
    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())
    found = _collected(capture.metrics)
    assert _runtime(found) == {"process.memory.usage"}
    assert found["process.memory.usage"][0][0] == "qm_otel"


def test_the_instrumentations_exclusion_patterns_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS", "cpython.gc.*, process.memory.usage")
    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())
    found = _collected(capture.metrics)
    assert _runtime(found) == {name for name in NAMES if not name.startswith("cpython.")}
    [(scope, _, _, _)] = found["process.memory.usage"]  # excluded there: qm-otel's own, still one
    assert scope == "qm_otel"


def test_the_cpython_metrics_only_on_cpython(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(process_metrics.config({})) == NAMES
    monkeypatch.setattr(sys, "implementation", SimpleNamespace(name="pypy"))
    assert set(process_metrics.config({})) == {name for name in NAMES if not name.startswith("cpython.")}


def test_a_setup_after_shutdown_reports_on_the_new_provider() -> None:
    first = Capture()
    qm_otel.setup(**OFF, **first.setup_kwargs())
    assert _runtime(_collected(first.metrics)) == NAMES
    reset()
    assert process_metrics.installed() == frozenset()
    assert not SystemMetricsInstrumentor().is_instrumented_by_opentelemetry
    second = Capture()
    qm_otel.setup(**OFF, **second.setup_kwargs())
    found = _collected(second.metrics)
    assert _runtime(found) == NAMES
    assert all(len(found[name]) == 1 for name in NAMES)
    reset()
    third = Capture()
    qm_otel.setup(**OFF, runtime_metrics=False, **third.setup_kwargs())
    assert _runtime(_collected(third.metrics)) == {"process.memory.usage"}


def _entry_point() -> EntryPoint:
    return next(e for e in entry_points(group="opentelemetry_instrumentor") if e.name == process_metrics.ENTRY_POINT)


def test_neither_launch_path_loads_the_entry_point_with_its_defaults() -> None:
    """The entry point would report every system.* and process.runtime.* metric: qm-otel never loads it."""
    capture = Capture()
    telemetry = qm_otel.setup(**OFF, runtime_metrics=False, **capture.setup_kwargs())
    entry_point = _entry_point()
    assert process_metrics.ENTRY_POINT in libraries.WIRED_BY_SETUP
    assert process_metrics.ENTRY_POINT not in libraries.instrument_installed({})
    QmOtelDistro().load_instrumentor(entry_point, skip_dep_check=True)  # what opentelemetry-instrument calls
    assert not libraries.instrument(entry_point, telemetry.tracer_provider, telemetry.meter_provider)
    assert not SystemMetricsInstrumentor().is_instrumented_by_opentelemetry
    assert _runtime(_collected(capture.metrics)) == {"process.memory.usage"}


def test_the_wrappers_load_after_setup_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Under opentelemetry-instrument: setup() first, then the wrapper hands each entry point to the distro."""
    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())
    caplog.clear()
    with caplog.at_level("WARNING"):
        QmOtelDistro().load_instrumentor(_entry_point(), skip_dep_check=True)
    # no "Attempting to instrument while already instrumented"
    assert [r for r in caplog.records if r.levelname != "INFO"] == []
    found = _collected(capture.metrics)
    assert _runtime(found) == NAMES
    assert all(len(found[name]) == 1 for name in NAMES)


def test_an_applications_own_instrumentation_is_left_alone() -> None:
    own = InMemoryMetricReader()
    instrumentor = SystemMetricsInstrumentor(config={"process.thread.count": None})
    instrumentor.instrument(meter_provider=MeterProvider(metric_readers=[own]))
    try:
        capture = Capture()
        qm_otel.setup(**OFF, **capture.setup_kwargs())
        assert process_metrics.installed() == frozenset()
        assert _runtime(_collected(capture.metrics)) == {"process.memory.usage"}  # qm-otel's own
        assert set(_collected(own)) == {"process.thread.count"}  # its configuration untouched
        reset()
        assert SystemMetricsInstrumentor().is_instrumented_by_opentelemetry  # not uninstrumented by shutdown()
    finally:
        SystemMetricsInstrumentor().uninstrument()


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _cpu_user(found: dict[str, Any]) -> float:
    [(_, _, attributes, values)] = found["process.cpu.time"]
    return next(v for a, v in zip(attributes, values, strict=True) if a["type"] == "user")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_reports_its_own_process() -> None:
    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    _burn(0.4)
    parent = _collected(capture.metrics)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own readings, sent to the parent
        try:
            found = _collected(capture.metrics)
            me = psutil.Process()
            report = {"cpu_user": _cpu_user(found), "own_cpu_user": me.cpu_times().user,
                      "threads": found["process.thread.count"][0][3][0], "own_threads": me.num_threads()}
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    stop.set()
    # (other at-fork handlers of the test process may work in the child: compare with its own readings)
    assert _cpu_user(parent) >= child["own_cpu_user"] + 0.3  # the parent's figure is not the child's
    assert child["cpu_user"] == pytest.approx(child["own_cpu_user"], abs=0.05)
    assert parent["process.thread.count"][0][3][0] >= 5  # the 4 threads stay in the parent
    assert abs(child["threads"] - child["own_threads"]) <= 1  # (a helper thread may start or end in between)
