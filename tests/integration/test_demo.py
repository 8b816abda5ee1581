"""The demo command, as the README runs it: with no collector, and with one answering."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver


def run_demo(endpoint: str, columns: int | None = None) -> str:
    env = svc.base_env(endpoint)
    for key in ("OTEL_SERVICE_NAME", "QM_OTEL_LOG_FORMAT", "QM_OTEL_SERVICE_VERSION", "QM_OTEL_ENVIRONMENT"):
        env.pop(key)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    result = subprocess.run([str(svc.BIN / "qm-otel"), "demo"], env=env, cwd=svc.ROOT, capture_output=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_demo_without_a_collector_keeps_and_draws_its_telemetry() -> None:
    out = run_demo(f"http://127.0.0.1:{svc.free_port()}")
    assert "telemetry → memory (no collector answered" in out
    # one panel per traced request: 13 of the 15 calls (the health probes are not traced)
    assert "13 request traces drawn" in out
    assert out.count("GET /checkout/{sku} →") == 6
    assert out.count("GET /checkout/{sku} → 502") == 3  # the inventory outage ...
    assert "GET /checkout/{sku} → 503" in out  # ... opens the breaker: the next checkout is refused
    for message in ("Circuit breaker opened", "Testing circuit breaker", "Circuit breaker closed"):
        assert message in out
    assert "qm_otel.breaker.state" in out
    assert "inventory backend timed out" in out
    assert "GET /inventory/{sku}" in out  # the dependency's server span, inside the checkout trace
    assert "TEMPLATE build_report" in out
    assert "http.server.request.duration" in out
    assert "http.client.request.duration" in out
    assert "month closed" in out
    # correlation: an order number becomes the trace; a rejected value is replaced, never echoed
    assert re.search(r"GET /checkout/sku-1 +200 +order-1001 +client", out)
    assert re.search(r"correlation\.id +order-1006", out)
    assert re.search(r"trace_id +6f9619ff8b86d011b42d00cf4fc964ff", out)
    assert out.count("not a valid id!") == 1  # only where the demo says what it sent (and that it was refused)
    assert "qm_otel.correlation.rejected" in out
    # the handler that blocks the event loop: one watchdog record, naming the blocking line, in its trace
    assert out.count("event-loop watchdog") == 1, out
    stall = out.split("event-loop watchdog")[1]
    assert re.search(r"event loop blocked for \d+ ms \(threshold 200 ms\) in GET /blocking", stall), stall
    assert re.search(r"blocking line: \S*demo_service\.py:\d+ in blocking", stall), stall
    assert re.search(r"time\.sleep\(0\.4\)", stall), stall  # the stack's last line is the call itself


def test_demo_with_a_collector_exports_there_too(receiver: OtlpReceiver) -> None:
    out = run_demo(receiver.endpoint)
    assert f"telemetry → the collector at {receiver.endpoint}" in out
    assert "Grafana" in out
    spans, logs, points = receiver.snapshot()
    assert {s.resource["service.name"] for s in spans} == {"qm-demo"}
    assert any(s.name == "GET /checkout/{sku}" for s in spans)
    assert any(g.body == "report built" for g in logs)
    assert any(p.name == "http.server.request.duration" for p in points)


@pytest.mark.parametrize("columns", [80, 120])
def test_the_demo_reads_cleanly_at_common_terminal_widths(columns: int) -> None:
    out = run_demo(f"http://127.0.0.1:{svc.free_port()}", columns)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= columns
    # whole things stay on one line: each request of the traffic, each panel's title, each metric's name
    for request in ("GET /checkout/sku-1", "GET /no-such-route", "POST /events"):
        assert any(line.startswith(request) and re.search(r" \d{3} ", line) for line in lines), request
    for title in ("GET /checkout/{sku} → 502", "GET /items/{item_id} → 404", "GET /slow → 200"):
        assert any(title in line for line in lines), title
    for metric in ("http.server.request.duration", "qm_otel.breaker.transitions", "qm_otel.startup.duration"):
        assert any(line.strip() == metric or line.startswith(metric + " ") for line in lines), metric
    assert "…" not in out  # nothing cut short
    assert not re.search(r"\d\.\d{4,}", out)  # no raw floats: ms with one decimal, counts as integers
    assert "→ none" not in out  # the start-up record says where telemetry goes: in-process here
    assert not re.search(r"(GET /\S+) \1", out)  # no route repeated back to back
