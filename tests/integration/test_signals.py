"""Both launch paths, against a real uvicorn process and the real OTLP receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import qm_otel
from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

LAUNCHES = svc.LAUNCHES
#: resource attributes whose values differ per process, so only their presence is compared
PER_PROCESS = {"service.instance.id", "process.pid", "process.parent_pid", "process.command_args",
               "process.command_line", "process.command", "process.executable.path", "process.executable.name",
               "process.runtime.description"}


def run_traffic(receiver: OtlpReceiver, launch: str, requests: int = 3) -> svc.Service:
    app, zero_code = LAUNCHES[launch]
    with svc.start(app, svc.base_env(receiver.endpoint), zero_code=zero_code) as service:
        for n in range(requests):
            assert service.get(f"/work/{n}").status_code == 200
        assert service.get("/healthz").status_code == 200
        receiver.wait_for(lambda r: sum(s.name == "GET /work/{n}" for s in r.snapshot()[0]) >= requests)
        receiver.wait_for(lambda r: sum(str(g.body).startswith("working") for g in r.snapshot()[1]) >= requests)
        receiver.wait_for(lambda r: any(p.name == "http.server.request.duration" for p in r.snapshot()[2]))
        code = service.terminate()
    assert code in (0, -15), service.errors()
    return service


@pytest.mark.parametrize("launch", LAUNCHES)
def test_all_three_signals_arrive_with_the_resource(receiver: OtlpReceiver, launch: str) -> None:
    run_traffic(receiver, launch)
    spans, logs, points = receiver.snapshot()
    for resource in [spans[0].resource, logs[0].resource, points[0].resource]:
        assert resource["service.name"] == "itest"
        assert resource["service.version"] == "1.2.3"
        assert resource["deployment.environment.name"] == "test"
        assert resource["telemetry.distro.name"] == "qm-otel"
        assert resource["telemetry.distro.version"] == qm_otel.__version__
        assert resource["telemetry.sdk.language"] == "python"
        for key in ("service.instance.id", "host.name", "os.type", "process.pid", "process.runtime.name"):
            assert resource.get(key), key


@pytest.mark.parametrize("launch", LAUNCHES)
def test_one_server_span_per_request_and_health_is_not_traced(receiver: OtlpReceiver, launch: str) -> None:
    run_traffic(receiver, launch)
    spans, _, points = receiver.snapshot()
    work = [s for s in spans if s.name == "GET /work/{n}"]
    assert len(work) == 3
    assert {s.kind for s in work} == {2}  # SPAN_KIND_SERVER
    assert all(s.parent_span_id == "" for s in work)
    per_trace = {s.trace_id for s in work}
    assert len(per_trace) == 3
    assert [s for s in spans if s.trace_id in per_trace and s is not None and s.name != "GET /work/{n}"] == []
    assert not [s for s in spans if "healthz" in s.name or s.attributes.get("url.path") == "/healthz"]
    durations = [p for p in points if p.name == "http.server.request.duration"]
    assert {p.unit for p in durations} == {"s"}
    # one producer of the histogram and the span: qm-otel; FastAPI's native telemetry is off for the app
    assert {p.scope for p in durations} == {"qm_otel"}
    assert {s.scope for s in spans} == {"qm_otel"}
    # cumulative temporality: the last export per route holds the whole count, once (no second histogram)
    last = [p for p in durations if p.attributes.get("http.route") == "/work/{n}"][-1]
    assert last.count == 3
    assert not [p for p in points if p.name == "http.server.duration"]  # the old, pre-stable name


@pytest.mark.parametrize("launch", LAUNCHES)
def test_log_records_carry_the_ids_of_the_request_that_wrote_them(receiver: OtlpReceiver, launch: str) -> None:
    service = run_traffic(receiver, launch)
    spans, logs, _ = receiver.snapshot()
    by_trace = {s.trace_id: s for s in spans if s.name == "GET /work/{n}"}
    working = [g for g in logs if str(g.body).startswith("working")]
    assert len(working) == 3
    for record in working:
        assert record.trace_id in by_trace
        assert record.span_id == by_trace[record.trace_id].span_id
        assert record.severity_text == "INFO"
    # stdout: one JSON line per record, the same IDs, uvicorn's access log routed into the same format
    lines = [json.loads(line) for line in service.lines if line.startswith("{")]
    stdout_working = [line for line in lines if str(line["message"]).startswith("working")]
    assert sorted(line["message"] for line in stdout_working) == ["working 0", "working 1", "working 2"]
    assert {line["trace_id"] for line in stdout_working} == set(by_trace)
    # one request-log record per request (uvicorn's own access line is replaced, never doubled)
    assert [line for line in lines if line["logger"] == "uvicorn.access"] == []
    requests = [line for line in lines if line["logger"] == "qm_otel.requests"]
    assert len(requests) == 3  # /healthz is not logged
    assert {line["http_route"] for line in requests} == {"/work/{n}"}
    assert {line["http_status_code"] for line in requests} == {200}
    assert {line["trace_id"] for line in requests} == set(by_trace)
    assert all(line["event"] == "http_request" and line["component"] == "API" for line in requests)
    assert all(line["service"] == "itest" for line in lines)
    non_json = [line for line in service.lines if line.strip() and not line.startswith("{")]
    assert non_json == []


def test_setup_twice_returns_the_same_handle_and_no_duplicate_lines(receiver: OtlpReceiver) -> None:
    with svc.start("tests.integration.apps.with_setup:app", svc.base_env(receiver.endpoint)) as service:
        assert service.get("/same-handle").json() == {"same": True}
        assert service.get("/work/7").status_code == 200
        receiver.wait_for(lambda r: any(g.body == "working 7" for g in r.snapshot()[1]))
    assert sum('"working 7"' in line for line in service.lines) == 1
    assert sum(g.body == "working 7" for g in receiver.snapshot()[1]) == 1


def test_both_launch_paths_export_the_same_signals(receiver: OtlpReceiver) -> None:
    run_traffic(receiver, "setup")
    first = receiver.snapshot()
    with OtlpReceiver().start() as other:
        run_traffic(other, "opentelemetry-instrument")
        second = other.snapshot()

    def shape(snapshot: tuple[list, list, list]) -> dict[str, object]:
        spans, logs, points = snapshot
        resource = spans[0].resource
        return {
            "span names": sorted({s.name for s in spans}),
            "metric names": sorted({p.name for p in points}),
            "log loggers": sorted({str(g.body).split(" ")[0] for g in logs if str(g.body).startswith("working")}),
            "resource keys": sorted(resource),
            "resource values": {k: v for k, v in resource.items() if k not in PER_PROCESS},
        }

    assert shape(first) == shape(second)


OLD_FASTAPI = ("fastapi==0.115.12", "starlette==0.46.2")  # before FastAPI had native telemetry


@pytest.fixture(scope="session")
def old_fastapi(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory holding an older FastAPI release, to put first on PYTHONPATH."""
    return svc.packages_dir(tmp_path_factory.mktemp("old-fastapi"), *OLD_FASTAPI)


@pytest.mark.parametrize("launch", LAUNCHES)
def test_older_fastapi_also_gets_one_server_span_and_one_histogram(
    receiver: OtlpReceiver, launch: str, old_fastapi: str
) -> None:
    app, zero_code = LAUNCHES[launch]
    env = svc.base_env(receiver.endpoint, PYTHONPATH=f"{old_fastapi}{os.pathsep}{svc.ROOT}")
    with svc.start(app, env, zero_code=zero_code) as service:
        version = subprocess.run([sys.executable, "-c", "import fastapi; print(fastapi.__version__)"], env=env,
                                 capture_output=True, check=True, text=True).stdout.strip()
        assert version == OLD_FASTAPI[0].split("==")[1]
        for n in range(3):
            assert service.get(f"/work/{n}").status_code == 200
        receiver.wait_for(lambda r: sum(s.name == "GET /work/{n}" for s in r.snapshot()[0]) >= 3)
        receiver.wait_for(lambda r: any(p.name == "http.server.request.duration" and p.count == 3
                                        for p in r.snapshot()[2]))
    spans, _, points = receiver.snapshot()
    assert len(spans) == 3
    assert {s.kind for s in spans} == {2}
    durations = {p.scope for p in points if p.name == "http.server.request.duration"}
    assert durations == {"qm_otel"}


def test_instrument_app_for_an_app_created_after_setup(receiver: OtlpReceiver) -> None:
    with svc.start("tests.integration.apps.late:app", svc.base_env(receiver.endpoint)) as service:
        assert service.get("/work/3").status_code == 200
        receiver.wait_for(lambda r: any(g.body == "working 3" for g in r.snapshot()[1]))
        receiver.wait_for(lambda r: any(s.name == "GET /work/{n}" for s in r.snapshot()[0]))
    spans, logs, _ = receiver.snapshot()
    assert [s.name for s in spans] == ["GET /work/{n}"]
    assert [g.trace_id for g in logs if g.body == "working 3"] == [spans[0].trace_id]
    assert "already instrumented" not in service.errors() + service.output()
