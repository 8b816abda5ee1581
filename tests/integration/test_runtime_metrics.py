"""Issue 25, item 1: the process and CPython metrics reach a real OTLP receiver from every uvicorn worker.

Both launch paths (``setup()`` in the app, ``opentelemetry-instrument``), ``uvicorn --workers 2``
and, under the wrapper, gunicorn's two workers forked from a master that set up first: each
worker exports its own set, with its unit, under its own ``process.pid``, and nothing of the
instrumentation's default configuration (no ``system.*``, no ``process.runtime.*``). With
``QM_OTEL_RUNTIME_METRICS=false`` (or ``system_metrics`` in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``)
only ``process.memory.usage`` (qm-otel's own) is left.
"""

from __future__ import annotations

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import MetricPoint, OtlpReceiver

#: metric → (unit, OTLP kind, monotonic for a sum)
EXPECTED = {
    "process.cpu.time": ("s", "sum", True),
    "process.memory.usage": ("By", "sum", False),
    "process.memory.virtual": ("By", "sum", False),
    "process.thread.count": ("", "sum", False),
    "process.open_file_descriptor.count": ("", "sum", False),
    "process.context_switches": ("", "sum", True),
    "cpython.gc.collections": ("{collection}", "sum", True),
    "cpython.gc.collected_objects": ("{object}", "sum", True),
    "cpython.gc.uncollectable_objects": ("{object}", "sum", True),
}
SCOPE = "opentelemetry.instrumentation.system_metrics"
FAST = {"QM_OTEL_METRIC_EXPORT_INTERVAL": "200", "QM_OTEL_TRACES_EXPORTER": "none", "QM_OTEL_LOGS_EXPORTER": "none"}


def _runtime(points: list[MetricPoint]) -> list[MetricPoint]:
    return [p for p in points if p.name.startswith(("process.", "cpython.", "system."))]


def _by_pid(points: list[MetricPoint]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for point in _runtime(points):
        found.setdefault(int(point.resource["process.pid"]), set()).add(point.name)
    return found


def _serve(launch: str, server: str, env: dict[str, str]) -> svc.Service:
    app, zero_code = svc.LAUNCHES[launch]
    if server == "uvicorn":
        return svc.start(app, env, zero_code=zero_code, extra_args=("--workers", "2"))
    port = svc.free_port()  # gunicorn forks its workers from the master, which set up first under the wrapper
    command = [str(svc.BIN / "gunicorn"), app, "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
               "-b", f"127.0.0.1:{port}"]
    return svc.launch([str(svc.BIN / "opentelemetry-instrument"), *command] if zero_code else command, port, env)


@pytest.mark.parametrize(("launch", "server"), [
    ("setup", "uvicorn"), ("opentelemetry-instrument", "uvicorn"), ("opentelemetry-instrument", "gunicorn")])
def test_every_worker_exports_its_own_process_and_runtime_metrics(receiver: OtlpReceiver, launch: str,
                                                                  server: str) -> None:
    with _serve(launch, server, svc.base_env(receiver.endpoint, **FAST)):
        receiver.wait_for(lambda r: sum(names == set(EXPECTED) for names in _by_pid(r.snapshot()[2]).values()) >= 2,
                          timeout_s=30)
    points = _runtime(receiver.snapshot()[2])
    assert set(_by_pid(points)) == {int(p.resource["process.pid"]) for p in points}
    assert len(_by_pid(points)) == 2  # the two workers; the supervisor exports nothing
    assert len({p.resource["service.instance.id"] for p in points}) == 2
    for point in points:
        assert point.name in EXPECTED  # nothing of the default configuration
        assert (point.unit, point.kind, point.monotonic) == EXPECTED[point.name], point
        assert point.scope == SCOPE
    memory = [p for p in points if p.name == "process.memory.usage"]
    assert all(p.attributes == {} and p.value is not None and p.value > 10 * 1024 * 1024 for p in memory)
    assert {p.attributes["type"] for p in points if p.name == "process.cpu.time"} == {"user", "system"}
    assert {p.attributes["cpython.gc.generation"] for p in points if p.name == "cpython.gc.collections"} == {0, 1, 2}
    assert {len(p.attributes) for p in points if p.name.startswith("cpython.")} == {1}


@pytest.mark.parametrize(("launch", "variable", "value"), [
    ("setup", "QM_OTEL_RUNTIME_METRICS", "false"),
    ("opentelemetry-instrument", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "sqlite3,system_metrics"),
])
def test_off_leaves_only_the_memory_of_the_band(receiver: OtlpReceiver, launch: str, variable: str,
                                                value: str) -> None:
    app, zero_code = svc.LAUNCHES[launch]
    with svc.start(app, svc.base_env(receiver.endpoint, **{variable: value}, **FAST), zero_code=zero_code):
        receiver.wait_for(lambda r: len([p for p in r.snapshot()[2] if p.name == "process.memory.usage"]) >= 2,
                          timeout_s=30)
    points = _runtime(receiver.snapshot()[2])
    assert {p.name for p in points} == {"process.memory.usage"}
    assert {(p.scope, p.unit, p.kind, p.monotonic) for p in points} == {("qm_otel", "By", "sum", False)}
    assert all(p.attributes == {} for p in points)
