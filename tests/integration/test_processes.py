"""Under ``opentelemetry-instrument``, only the processes that serve export telemetry (issue 12, item 6)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

APP = "tests.integration.apps.plain:app"


def children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command lines."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            found[int(child)] = cmdline
    return found


def exporting_pids(receiver: OtlpReceiver) -> set[int]:
    spans, logs, points = receiver.snapshot()
    return {int(item.resource["process.pid"]) for item in [*spans, *logs, *points]}


def serve_and_check(receiver: OtlpReceiver, command: list[str], port: int, is_worker: str) -> svc.Service:
    with svc.launch(command, port, svc.base_env(receiver.endpoint)) as service:
        supervisor = service.process.pid
        workers: dict[int, str] = {}
        for _ in range(200):  # the workers start after the supervisor listens
            workers = {pid: cmd for pid, cmd in children(supervisor).items() if is_worker in cmd}
            if len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2, children(supervisor)
        for _ in range(20):
            assert service.get("/work/1").status_code == 200
        # every worker exports its metrics (300 ms interval here): wait until both have been heard
        receiver.wait_for(lambda r: set(workers) <= exporting_pids(r), timeout_s=30)
        helpers = set(children(supervisor)) - set(workers)
    assert exporting_pids(receiver) == set(workers)  # not the supervisor, not multiprocessing's helpers
    assert supervisor not in exporting_pids(receiver)
    assert not helpers & exporting_pids(receiver)
    return service


def test_uvicorn_workers_export_and_its_supervisor_only_logs_to_stdout(receiver: OtlpReceiver) -> None:
    port = svc.free_port()
    command = [str(svc.BIN / "opentelemetry-instrument"), str(svc.BIN / "uvicorn"), APP, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "2"]
    service = serve_and_check(receiver, command, port, "multiprocessing.spawn")
    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    assert any("Started parent process" in str(line["message"]) for line in lines)  # the supervisor's own


@pytest.mark.parametrize("worker_class", ["uvicorn.workers.UvicornWorker"])
def test_gunicorn_workers_export_and_its_master_does_not(receiver: OtlpReceiver, worker_class: str) -> None:
    port = svc.free_port()
    command = [str(svc.BIN / "opentelemetry-instrument"), str(svc.BIN / "gunicorn"), APP, "-w", "2", "-k",
               worker_class, "-b", f"127.0.0.1:{port}"]
    serve_and_check(receiver, command, port, "gunicorn")
