"""Shutdown flushes, a dead collector costs nothing, forked workers each export."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

LAUNCHES = svc.LAUNCHES


@pytest.mark.parametrize("launch", LAUNCHES)
def test_sigterm_right_after_traffic_loses_nothing(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = LAUNCHES[launch]
    # a schedule delay far beyond the test: only the shutdown flush can deliver these
    env = svc.base_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000", OTEL_BLRP_SCHEDULE_DELAY="600000",
                       QM_OTEL_METRIC_EXPORT_INTERVAL="600000")
    with svc.start(app, env, zero_code=zero_code) as service:
        for n in range(50):
            assert service.get(f"/work/{n}").status_code == 200
    spans, logs, points = receiver.snapshot()
    assert sum(s.name == "GET /work/{n}" for s in spans) == 50, service.errors()
    assert sum(str(g.body).startswith("working") for g in logs) == 50
    assert any(p.name == "http.server.request.duration" for p in points)


@pytest.mark.parametrize("launch", LAUNCHES)
def test_a_collector_that_is_down_never_blocks_the_app(launch: str) -> None:
    app, zero_code = LAUNCHES[launch]
    dead = f"http://127.0.0.1:{svc.free_port()}"  # nothing listens there
    env = svc.base_env(dead, QM_OTEL_SHUTDOWN_TIMEOUT="2")
    with svc.start(app, env, zero_code=zero_code) as service:
        for n in range(20):
            response = service.get(f"/work/{n}")
            assert response.status_code == 200
            assert response.json() == {"n": n}
        code = service.terminate(timeout_s=60)  # bounded: the flush gives up after the shutdown timeout
    assert code in (0, -15)
    assert "Traceback" not in service.errors().split("Failed to export")[0]


FORK_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    import qm_otel
    from opentelemetry import trace
    qm_otel.setup(log_format="none")
    tracer = trace.get_tracer("fork-test")
    with tracer.start_as_current_span("parent-work"):
        pass
    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            with tracer.start_as_current_span(f"child-work-{n}"):
                logging.getLogger("fork").warning("child %d", n)
            qm_otel.shutdown()
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    qm_otel.shutdown()
    """
)


def test_each_forked_worker_exports_its_own_telemetry(receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000")
    result = subprocess.run([sys.executable, "-c", FORK_SCRIPT], env=env, capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    spans, logs, _ = receiver.snapshot()
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"parent-work", "child-work-0", "child-work-1"}
    pids = {name: span.resource["process.pid"] for name, span in by_name.items()}
    instances = {name: span.resource["service.instance.id"] for name, span in by_name.items()}
    assert len(set(pids.values())) == 3, pids
    assert len(set(instances.values())) == 3, instances
    assert sorted(g.body for g in logs if str(g.body).startswith("child")) == ["child 0", "child 1"]
    assert os.getpid() not in pids.values()


SAMPLER_SCRIPT = textwrap.dedent(
    """
    import uuid
    import qm_otel
    from opentelemetry import trace
    telemetry = qm_otel.setup(log_format="none", traces_exporter="none", metrics_exporter="none",
                              logs_exporter="none")
    print(telemetry.tracer_provider.sampler.get_description())
    tracer = trace.get_tracer("t")
    sampled = 0
    for _ in range(4000):
        with qm_otel.correlation(str(uuid.uuid4())):
            sampled += trace.get_current_span().is_recording()
    print(sampled)
    """
)


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
        {"QM_OTEL_TRACE_SAMPLE_RATIO": "0.5"},
    ],
)
def test_setup_samples_uuid_correlated_traces_at_the_configured_ratio(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-c", SAMPLER_SCRIPT], env=svc.base_env("http://127.0.0.1:9", **env),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    description, sampled = result.stdout.split()[-2:]
    assert "QmOtelTraceIdRatio{0.5}" in description
    assert 1700 < int(sampled) < 2300  # 4000 draws at 0.5: 2000 ± 300 is beyond 9 sigma
