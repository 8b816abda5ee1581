"""Exporter selection per signal (otlp, console, none), the gRPC transport, and uvicorn --workers."""

from __future__ import annotations

import json

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

LAUNCHES = svc.LAUNCHES


@pytest.mark.parametrize("launch", LAUNCHES)
def test_grpc_transport_delivers_all_three_signals(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = LAUNCHES[launch]
    port = receiver.start_grpc()
    env = svc.base_env(f"http://127.0.0.1:{port}", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    with svc.start(app, env, zero_code=zero_code) as service:
        assert service.get("/work/1").status_code == 200
        receiver.wait_for(lambda r: any(s.name == "GET /work/{n}" for s in r.snapshot()[0]))
        receiver.wait_for(lambda r: any(g.body == "working 1" for g in r.snapshot()[1]))
        receiver.wait_for(lambda r: any(p.name == "http.server.request.duration" for p in r.snapshot()[2]))
    assert receiver.snapshot()[0][0].resource["telemetry.distro.name"] == "qm-otel"


@pytest.mark.parametrize("launch", LAUNCHES)
def test_each_signal_honours_its_own_exporter_setting(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = LAUNCHES[launch]
    env = svc.base_env(receiver.endpoint, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="console",
                       OTEL_LOGS_EXPORTER="otlp")
    with svc.start(app, env, zero_code=zero_code) as service:
        assert service.get("/work/5").status_code == 200
        receiver.wait_for(lambda r: any(g.body == "working 5" for g in r.snapshot()[1]))
    spans, logs, points = receiver.snapshot()
    assert spans == []
    assert points == []
    assert logs
    # the console metric exporter prints JSON documents of resource_metrics to stdout
    assert '"resource_metrics"' in service.output()
    assert '"http.server.request.duration"' in service.output()
    json_lines = [json.loads(line) for line in service.lines if line.startswith("{\"timestamp\"")]
    assert any(line["message"] == "working 5" for line in json_lines)


@pytest.mark.parametrize("launch", LAUNCHES)
def test_uvicorn_workers_each_export_and_flush(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = LAUNCHES[launch]
    env = svc.base_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000", OTEL_BLRP_SCHEDULE_DELAY="600000")
    with svc.start(app, env, zero_code=zero_code, extra_args=("--workers", "2")) as service:
        for n in range(30):
            assert service.get(f"/work/{n}").status_code == 200
    spans, logs, _ = receiver.snapshot()
    work = [s for s in spans if s.name == "GET /work/{n}"]
    assert len(work) == 30, service.errors()[-3000:]
    assert sum(str(g.body).startswith("working") for g in logs) == 30
    instances = {s.resource["service.instance.id"] for s in work}
    pids = {s.resource["process.pid"] for s in work}
    assert len(instances) == len(pids)  # one instance id per worker process
