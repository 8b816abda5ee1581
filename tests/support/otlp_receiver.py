"""The tests' one OTLP receiver (HTTP, and gRPC on demand): decodes what the exporters send with opentelemetry-proto.

A test takes the ``receiver`` fixture (tests/conftest.py), or for another scope ``with OtlpReceiver().start()
as receiver:``. It answers as :attr:`OtlpReceiver.mode` says (accept, 503, a black hole, a refusal by status)
and can stop listening and start again (:meth:`OtlpReceiver.down`, :meth:`OtlpReceiver.up`); it keeps the
decoded spans, log records and metric points, and every accepted request with its headers (``raw``).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

T = TypeVar("T")

_ROUTES: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}
#: the modes that refuse every request for good, and their HTTP status (any path: a gateway, an auth proxy)
REFUSING = {"not_found": 404, "unauthorized": 401, "forbidden": 403, "too_large": 413}


def value_of(any_value: AnyValue) -> Any:
    """The Python value inside an OTLP AnyValue."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP key-value pairs as a dict."""
    return {pair.key: value_of(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass
class Span:
    resource: dict[str, Any]
    scope: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    #: its span events: name and attributes, in order
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Log:
    resource: dict[str, Any]
    body: Any
    severity_text: str
    severity_number: int
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    #: the name of the instrumentation scope that wrote it, and its timestamp
    scope: str = ""
    time_unix_nano: int = 0


@dataclass
class MetricPoint:
    resource: dict[str, Any]
    scope: str
    name: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    count: int | None
    value: float | None
    #: for a sum: whether it only rises (a counter, ``_total`` in Prometheus)
    monotonic: bool | None = None
    #: for a histogram: its buckets' upper bounds
    bounds: list[float] | None = None


@dataclass
class OtlpReceiver:
    """Listens on 127.0.0.1 (a free port) for OTLP/HTTP protobuf on /v1/traces, /v1/metrics, /v1/logs."""

    spans: list[Span] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    requests: int = 0
    #: every accepted request, in order: its path, its headers (names in lower case; a gRPC call's
    #: metadata) and the decoded message
    raw: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    #: how it answers: "ok"; "unavailable" (HTTP 503); "blackhole" (reads the request, never answers,
    #: until the mode changes); one of :data:`REFUSING` (that status for every request, whatever its
    #: path, after decoding what it refused into ``refused_logs`` / ``refused_requests``). Stopping it and
    #: starting it again on the same port refuses connections in between (see :meth:`restart`).
    mode: str = "ok"
    #: the log records of the requests a refusing mode refused (decoded by the path's signal suffix)
    refused_logs: list[Log] = field(default_factory=list)
    #: requests a refusing mode refused, by path
    refused_requests: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _grpc: Any = None

    @property
    def endpoint(self) -> str:
        assert self.port
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> OtlpReceiver:
        """Listen (OTLP/HTTP) on its port, a free one unless set; ``with OtlpReceiver().start() as r:`` stops it."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status = REFUSING.get(receiver.mode)
                if status is not None:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    receiver._refused(self.path, _decompressed(body, self.headers.get("Content-Encoding", "")))
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                types = _ROUTES.get(self.path)
                if types is None:
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.mode == "blackhole":
                    receiver._released.wait(120)
                    self.close_connection = True
                    return
                if receiver.mode == "unavailable":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = types[0].FromString(_decompressed(body, self.headers.get("Content-Encoding", "")))
                receiver._store(self.path, request, {k.lower(): v for k, v in self.headers.items()})
                payload = types[1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def set_mode(self, mode: str) -> None:
        """Answer from now on as ``mode`` says; leaving "blackhole" lets the held requests go."""
        self.mode = mode
        if mode == "blackhole":
            self._released.clear()
        else:
            self._released.set()

    def down(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`up`."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def up(self) -> None:
        """Listen again on the same port."""
        self.start()

    def stop(self) -> None:
        self._released.set()
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _refused(self, path: str, body: bytes) -> None:
        with self._lock:
            self.refused_requests[path] = self.refused_requests.get(path, 0) + 1
            if path.endswith("/v1/logs"):
                self.refused_logs.extend(_logs_of(ExportLogsServiceRequest.FromString(body)))

    def requests_to(self, path: str) -> list[tuple[dict[str, str], Any]]:
        """The headers and decoded message of every accepted request to ``path`` ("/v1/logs"), in order."""
        with self._lock:
            return [(headers, request) for p, headers, request in self.raw if p == path]

    def _store(self, path: str, request: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests += 1
            self.raw.append((path, headers, request))
            if path == "/v1/traces":
                self._store_spans(request)
            elif path == "/v1/logs":
                self._store_logs(request)
            else:
                self._store_metrics(request)

    def _store_spans(self, request: ExportTraceServiceRequest) -> None:
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(resource, ss.scope.name, s.name, s.kind, s.trace_id.hex(), s.span_id.hex(),
                             s.parent_span_id.hex(), attributes(s.attributes),
                             [(e.name, attributes(e.attributes)) for e in s.events])
                    )

    def _store_logs(self, request: ExportLogsServiceRequest) -> None:
        self.logs.extend(_logs_of(request))

    def _store_metrics(self, request: ExportMetricsServiceRequest) -> None:
        for rm in request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    for p in getattr(m, kind).data_points:
                        count = getattr(p, "count", None) if kind == "histogram" else None
                        value = None
                        if kind in ("sum", "gauge"):
                            value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                        monotonic = m.sum.is_monotonic if kind == "sum" else None
                        bounds = list(p.explicit_bounds) if kind == "histogram" else None
                        self.points.append(
                            MetricPoint(resource, sm.scope.name, m.name, m.unit, kind, attributes(p.attributes),
                                        count, value, monotonic, bounds)
                        )

    def start_grpc(self) -> int:
        """Also listen for OTLP/gRPC on a free 127.0.0.1 port (returned); decoded into the same lists."""
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc

        receiver = self

        class Traces(trace_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver._store("/v1/traces", request, _metadata(context))
                return ExportTraceServiceResponse()

        class Metrics(metrics_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver._store("/v1/metrics", request, _metadata(context))
                return ExportMetricsServiceResponse()

        class Logs(logs_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver._store("/v1/logs", request, _metadata(context))
                return ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        logs_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        return int(port)

    def snapshot(self) -> tuple[list[Span], list[Log], list[MetricPoint]]:
        with self._lock:
            return list(self.spans), list(self.logs), list(self.points)

    def wait_for(self, predicate: Callable[[OtlpReceiver], T], timeout_s: float = 60.0) -> T:
        """Poll until ``predicate`` returns something truthy; fail with what arrived if it never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate(self)
            if result:
                return result
            if time.monotonic() > deadline:
                spans, logs, points = self.snapshot()
                names = sorted({s.name for s in spans})
                raise AssertionError(
                    f"condition not met in {timeout_s}s; received {len(spans)} spans {names}, "
                    f"{len(logs)} logs, {len(points)} metric points"
                )
            time.sleep(0.05)


def _metadata(context: Any) -> dict[str, str]:
    """A gRPC call's metadata as headers (the keys are lower case already)."""
    return {item.key: item.value for item in context.invocation_metadata()}


def _decompressed(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _logs_of(request: ExportLogsServiceRequest) -> list[Log]:
    return [Log(attributes(rl.resource.attributes), value_of(r.body), r.severity_text, r.severity_number,
                r.trace_id.hex(), r.span_id.hex(), attributes(r.attributes), sl.scope.name, r.time_unix_nano)
            for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
