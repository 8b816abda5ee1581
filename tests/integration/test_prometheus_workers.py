"""Issue 14, item 2: scraping a service that runs several workers (uvicorn ``--workers 2``, gunicorn ``-w 2``)."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest

from tests.support import service as svc

APP = "tests.integration.apps.with_setup:app"
PORTS = 4


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for _ in range(50):
        first = svc.free_port()
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no run of free ports")


def scrape(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None


def requests_counted(text: str) -> float:
    pattern = r'^http_server_request_duration_seconds_count\{[^}]*http_route="/work/\{n\}"[^}]*\} ([0-9.e+]+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_every_workers_requests_are_scraped(server: str) -> None:
    metrics_port, port = free_ports(PORTS), svc.free_port()
    env = svc.base_env("http://127.0.0.1:9", QM_OTEL_METRICS_EXPORTER="prometheus", QM_OTEL_TRACES_EXPORTER="none",
                       QM_OTEL_LOGS_EXPORTER="none", QM_OTEL_PROMETHEUS_HOST="127.0.0.1",
                       QM_OTEL_PROMETHEUS_PORT=str(metrics_port), QM_OTEL_PROMETHEUS_PORTS=str(PORTS))
    if server == "uvicorn":
        command = [str(svc.BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    else:
        command = [str(svc.BIN / "gunicorn"), APP, "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
                   "-b", f"127.0.0.1:{port}"]
    service = svc.launch(command, port, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(scrape(p) is not None for p in range(metrics_port,
                                                                                        metrics_port + PORTS)) < 2:
            time.sleep(0.2)
        for n in range(30):
            with httpx.Client() as client:  # a new connection each time: the kernel spreads them over workers
                assert client.get(f"{service.url}/work/{n}").status_code == 200
        pages = [page for p in range(metrics_port, metrics_port + PORTS) if (page := scrape(p)) is not None]
    finally:
        service.terminate()
    assert len(pages) == 2  # one endpoint per worker, on the first free ports
    pids = {m for page in pages for m in re.findall(r'process_pid="(\d+)"', page)}
    assert len(pids) == 2
    assert sum(requests_counted(page) for page in pages) == 30  # every worker's requests, none twice
    assert "qm-otel: this process serves /metrics on" in service.output()
