"""Issue 14, item 2: scraping a service that runs several workers (uvicorn ``--workers 2``, gunicorn ``-w 2``)."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

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
    with svc.launch(command, port, env) as service:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(scrape(p) is not None for p in range(metrics_port,
                                                                                        metrics_port + PORTS)) < 2:
            time.sleep(0.2)
        for n in range(30):
            with httpx.Client() as client:  # a new connection each time: the kernel spreads them over workers
                assert client.get(f"{service.url}/work/{n}").status_code == 200
        pages = [page for p in range(metrics_port, metrics_port + PORTS) if (page := scrape(p)) is not None]
    assert len(pages) == 2  # one endpoint per worker, on the first free ports
    pids = {m for page in pages for m in re.findall(r'process_pid="(\d+)"', page)}
    assert len(pids) == 2
    assert sum(requests_counted(page) for page in pages) == 30  # every worker's requests, none twice
    assert "qm-otel: this process serves /metrics on" in service.output()


#: Prometheus's OTLP translation (``UnderscoreEscapingWithSuffixes``, the collector path in
#: collector/prometheus.yml): the unit words it appends
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def otlp_to_prometheus(name: str, unit: str, kind: str, monotonic: bool | None) -> str:
    """The name Prometheus's OTLP receiver gives an OTLP metric (escaped, unit and type suffixes)."""
    base = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9_:]", "_", name))
    unit = re.sub(r"\{[^}]*\}", "", unit)
    word = _UNIT_WORDS.get(unit, unit.replace("/", "_per_"))
    if word and not base.endswith(f"_{word}"):
        base += f"_{word}"
    if kind == "sum" and monotonic:
        base += "_total"
    elif kind == "gauge" and unit == "1":
        base += "_ratio"
    return base


def scraped_names(text: str) -> set[str]:
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    return names | {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def test_the_scrape_endpoint_and_the_collector_path_give_the_same_names(receiver: OtlpReceiver) -> None:
    metrics_port = free_ports(1)
    env = svc.base_env(receiver.endpoint, QM_OTEL_METRICS_EXPORTER="otlp,prometheus",
                       QM_OTEL_PROMETHEUS_HOST="127.0.0.1", QM_OTEL_PROMETHEUS_PORT=str(metrics_port),
                       TEST_RECOVERY_S="300")
    with svc.start("tests.integration.apps.resilience:app", env) as service:
        assert service.get("/pay").status_code == 200
        service.get("/lookup/1", params={"hit": "true"})
        receiver.wait_for(lambda r: any(p.name == "qm_otel.cache.requests" for p in r.snapshot()[2]))
        receiver.wait_for(lambda r: any(p.name == "http.server.request.duration" for p in r.snapshot()[2]))
        page = scrape(metrics_port) or ""
    pushed = {(p.name, p.unit, p.kind, p.monotonic) for p in receiver.snapshot()[2]}
    expected = {otlp_to_prometheus(*metric): metric[0] for metric in pushed}
    missing = {prom: otlp for prom, otlp in expected.items() if prom not in scraped_names(page)}
    assert not missing, missing
    assert "http_server_request_duration_seconds" in expected
    assert "qm_otel_cache_requests_total" in expected
