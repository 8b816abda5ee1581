"""An OTLP/HTTP sink for the benchmarks, in its own process: decodes every export and counts the items.

``python -m benchmarks.sink PORT`` serves ``/v1/traces``, ``/v1/metrics``, ``/v1/logs`` (protobuf,
gzip or not) on 127.0.0.1, plus ``GET /counts`` (JSON) and ``POST /reset``. Counted: spans (all and
SERVER), log records by instrumentation scope (the logger name), and for ``http.server.request.duration``
the number of recorded requests (the histograms' counts: the largest cumulative count per series,
summed; delta points summed), and the latest value of the service's own ``qm_otel.telemetry.*``
counters (dropped, retried) by signal and reason.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
#: the server duration histogram under the stable and the old HTTP semantic conventions
DURATIONS = frozenset({"http.server.request.duration", "http.server.duration"})


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: cumulative histogram counts at the last reset: only what comes after is counted
        self.baseline: dict[tuple[Any, ...], int] = {}
        self.reset()

    def reset(self) -> None:
        self.baseline = dict(getattr(self, "duration_series", {}))
        self.spans = 0
        self.server_spans = 0
        self.logs: Counter[str] = Counter()
        self.duration_series: dict[tuple[Any, ...], int] = dict(self.baseline)
        self.exports: Counter[str] = Counter()
        self.telemetry: dict[str, float] = {}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "spans": self.spans,
                "server_spans": self.server_spans,
                "logs": dict(self.logs),
                "log_records": sum(self.logs.values()),
                "duration_points": sum(v - self.baseline.get(k, 0) for k, v in self.duration_series.items()),
                "exports": dict(self.exports),
                "telemetry": dict(self.telemetry),
            }


COUNTS = Counts()


def _traces(request: ExportTraceServiceRequest) -> None:
    spans = server = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans += len(scope_spans.spans)
            server += sum(1 for span in scope_spans.spans if span.kind == SERVER)
    with COUNTS.lock:
        COUNTS.spans += spans
        COUNTS.server_spans += server


def _logs(request: ExportLogsServiceRequest) -> None:
    found: Counter[str] = Counter()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            found[scope_logs.scope.name] += len(scope_logs.log_records)
    with COUNTS.lock:
        COUNTS.logs.update(found)


def _metrics(request: ExportMetricsServiceRequest) -> None:
    for resource_metrics in request.resource_metrics:
        resource_key = resource_metrics.resource.SerializeToString(deterministic=True)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name.startswith("qm_otel.telemetry.") and metric.HasField("sum"):
                    for sum_point in metric.sum.data_points:
                        labels = {a.key: a.value.string_value for a in sum_point.attributes}
                        key = f"{metric.name.rsplit('.', 1)[1]}:{labels.get('signal')}:{labels.get('reason', '-')}"
                        with COUNTS.lock:
                            COUNTS.telemetry[key] = max(COUNTS.telemetry.get(key, 0.0), sum_point.as_int)
                    continue
                if metric.name not in DURATIONS or not metric.HasField("histogram"):
                    continue
                for point in metric.histogram.data_points:
                    key = (resource_key, scope_metrics.scope.name,
                           tuple(sorted((a.key, a.value.SerializeToString()) for a in point.attributes)),
                           point.start_time_unix_nano)
                    with COUNTS.lock:
                        COUNTS.duration_series[key] = max(COUNTS.duration_series.get(key, 0), point.count)


ROUTES = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, _traces),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, _logs),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, _metrics),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/counts":
            self._reply(200, json.dumps(COUNTS.snapshot()).encode(), "application/json")
        else:
            self._reply(404, b"", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/reset":
            with COUNTS.lock:
                COUNTS.reset()
            self._reply(200, b"{}", "application/json")
            return
        route = ROUTES.get(self.path)
        if route is None:
            self._reply(404, b"", "text/plain")
            return
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request_type, response_type, count = route
        count(request_type.FromString(body))
        with COUNTS.lock:
            COUNTS.exports[self.path] += 1
        self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"sink listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
