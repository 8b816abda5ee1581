"""`qm-otel logs` against a local server answering in Loki's documented format; `qm-otel check`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from qm_otel.cli import main
from qm_otel.cli.loki import LokiClient, LokiError, correlation_query
from qm_otel.cli.stack import Endpoint, check_endpoints
from qm_otel.core.correlation import trace_id_for

# https://grafana.com/docs/loki/latest/reference/loki-http-api/#query-logs-within-a-range-of-time
# (with the categorize-labels encoding flag: structured metadata apart from the stream labels)
STREAMS = {
    "status": "success",
    "data": {
        "resultType": "streams",
        "result": [
            {"stream": {"service_name": "checkout", "deployment_environment": "prod"},
             "values": [["1757412000048000000", "order placed",
                         {"structuredMetadata": {"correlation_id": "order-1001", "severity_text": "INFO"}}],
                        ["1757412000010000000", "GET /checkout/{sku} 200 12.0ms",
                         {"structuredMetadata": {"correlation_id": "order-1001", "severity_text": "INFO"}}]]},
            {"stream": {"service_name": "inventory", "severity_text": "ERROR"},
             "values": [["1757412000030000000", "inventory timed out"]]},
        ],
        "stats": {},
    },
}


class FakeLoki(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared with the test on purpose
    answer: tuple[int, str] = (200, json.dumps(STREAMS))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        FakeLoki.seen.append({"path": parts.path, "params": parse_qs(parts.query), "headers": dict(self.headers)})
        status, body = FakeLoki.answer
        if parts.path in ("/ready", "/-/ready", "/api/health", "/"):
            status, body = 200, "ready"
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def loki() -> Iterator[str]:
    FakeLoki.seen = []
    FakeLoki.answer = (200, json.dumps(STREAMS))
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLoki)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_query_asks_for_the_id_and_its_trace() -> None:
    trace = format(trace_id_for("order-1001"), "032x")
    assert correlation_query("order-1001") == (
        f'{{service_name=~".+"}} | correlation_id="order-1001" or trace_id="{trace}"')
    with pytest.raises(LokiError, match="not a valid correlation ID"):
        correlation_query('x" or 1=1 or "')  # never reaches a query


def test_the_client_decodes_streams_oldest_first(loki: str) -> None:
    with LokiClient(loki) as client:
        lines = client.correlation_lines("order-1001", since="2h", limit=50)
    assert [line.line for line in lines] == ["GET /checkout/{sku} 200 12.0ms", "inventory timed out", "order placed"]
    assert lines[0].time == "2025-09-09T10:00:00.010Z"
    assert lines[0].labels == {"service_name": "checkout", "deployment_environment": "prod",
                               "correlation_id": "order-1001", "severity_text": "INFO"}
    [request] = FakeLoki.seen
    assert request["path"] == "/loki/api/v1/query_range"
    assert request["params"]["query"] == [correlation_query("order-1001")]
    assert (request["params"]["since"], request["params"]["limit"]) == (["2h"], ["50"])
    assert request["headers"]["X-Loki-Response-Encoding-Flags"] == "categorize-labels"


def test_logs_command_prints_lines_and_the_tempo_link(loki: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "order-1001", "--loki", loki, "--grafana", "http://grafana.local:3000"]) == 0
    out = capsys.readouterr().out.splitlines()
    trace = format(trace_id_for("order-1001"), "032x")
    assert out[0] == f"correlation ID order-1001 → trace ID {trace}"
    assert out[1].startswith("trace in Tempo: http://grafana.local:3000/explore?schemaVersion=1&panes=")
    assert trace in out[1]
    assert out[2] == "2025-09-09T10:00:00.010Z  INFO   checkout          GET /checkout/{sku} 200 12.0ms"
    assert out[3].endswith("ERROR  inventory         inventory timed out")


@pytest.mark.parametrize(
    ("answer", "message"),
    [((500, "boom"), "answered HTTP 500: boom"), ((200, "not json"), "not JSON"),
     ((200, json.dumps({"status": "error"})), "unexpected Loki answer")],
)
def test_loki_errors_are_clear(loki: str, answer: tuple[int, str], message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    FakeLoki.answer = answer
    assert main(["logs", "order-1001", "--loki", loki]) == 2
    assert message in capsys.readouterr().err


def test_loki_down_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "order-1001", "--loki", "http://127.0.0.1:9", "--timeout", "2"]) == 2
    assert "did not answer" in capsys.readouterr().err


def test_no_lines_exits_1(loki: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakeLoki.answer = (200, json.dumps({"status": "success", "data": {"resultType": "streams", "result": []}}))
    assert main(["logs", "order-9", "--loki", loki]) == 1
    assert "no log lines for order-9" in capsys.readouterr().out


def test_check_reports_what_answers(loki: str) -> None:
    endpoints = {
        "loki": Endpoint("loki", f"{loki}/ready"),
        "otlp": Endpoint("otlp", loki, tcp=True),
        "tempo": Endpoint("tempo", "http://127.0.0.1:9/ready"),
        "grpc": Endpoint("grpc", "http://127.0.0.1:9", tcp=True),
    }
    results = {r.name: r for r in check_endpoints(endpoints, timeout_s=2)}
    assert (results["loki"].ok, results["otlp"].ok, results["tempo"].ok, results["grpc"].ok) == (
        True, True, False, False)
    assert results["loki"].detail.startswith("HTTP 200")


def test_check_command_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--host", "127.0.0.1", "--timeout", "1"]) == 1  # nothing of the stack runs here
    out = capsys.readouterr().out
    for name in ("collector", "loki", "tempo", "prometheus", "alertmanager", "grafana"):
        assert name in out
