"""The log lane and the request log's direct write give what the SDK's path and the stdlib's path give.

Differential: the same records go through a handler with the lane and one without it (the SDK's
``Logger.emit`` → ``ReadWriteLogRecord`` → ``BatchLogRecordProcessor``); what reaches the exporter is
encoded (qm-otel's encoder for the lane, the SDK's for the SDK path), decoded with
``opentelemetry-proto`` and compared whole. The request log written from its fields is compared with
the same record made by ``logging`` and handled by the same handler: stdout line and OTLP record.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LogRecordLimits
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from qm_otel.integrations.request_log import RequestLog
from qm_otel.logs import pipeline
from qm_otel.logs.formatters import RESERVED_ATTRS, JsonFormatter
from qm_otel.logs.handler import TelemetryHandler
from qm_otel.signals import encoding
from qm_otel.signals.log_lane import LaneRecord, QmLoggerProvider, make_lane

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12).filter(
    lambda n: n not in RESERVED_ATTRS and not n.startswith("_"))
SCALARS = st.one_of(st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                    st.booleans())
#: besides scalars: what the lane hands to the SDK's path (lists, big integers, None, other objects)
OTHERS = st.one_of(st.lists(st.text(max_size=5), max_size=3), st.integers(min_value=2**63, max_value=2**70),
                   st.none(), st.builds(object))


class Encoded(LogRecordExporter):
    """Keeps every batch as bytes: qm-otel's encoder for lane records, the SDK's for SDK records."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.lane_items = self.sdk_items = 0

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        lane = [item for item in batch if isinstance(item, LaneRecord)]
        sdk = [item for item in batch if not isinstance(item, LaneRecord)]
        self.lane_items += len(lane)
        self.sdk_items += len(sdk)
        if lane:
            self.payloads.append(encoding.encode_logs(lane))
        if sdk:
            self.payloads.append(sdk_encode_logs(sdk).SerializeToString())
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        del timeout_millis
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every exported record as a dict, with its scope name and resource, observed time left out."""
        found = []
        for payload in self.payloads:
            message = ExportLogsServiceRequest.FromString(payload)
            for resource_logs in message.resource_logs:
                resource = MessageToDict(resource_logs.resource)
                for scope_logs in resource_logs.scope_logs:
                    scope = MessageToDict(scope_logs.scope)
                    for record in scope_logs.log_records:
                        as_dict = MessageToDict(record)
                        as_dict.pop("observedTimeUnixNano", None)
                        found.append({"resource": resource, "scope": scope, **as_dict})
        return found


def pipeline_pair(lane: bool) -> tuple[QmLoggerProvider, Encoded, Any]:
    exporter = Encoded()
    limits = LogRecordLimits()
    provider = QmLoggerProvider(resource=Resource.create({"service.name": "svc"}), shutdown_on_exit=False,
                                log_record_limits=limits)
    processor = BatchLogRecordProcessor(exporter)
    provider.add_own_processor(processor)
    made = make_lane(provider, limits, [processor]) if lane else None
    assert (made is not None) == lane
    return provider, exporter, made


@pytest.fixture(scope="module")
def tracer() -> Any:
    return TracerProvider().get_tracer("test")


def make_record(level: int, extras: dict[str, Any], failing: bool) -> logging.LogRecord:
    exc_info = None
    if failing:
        try:
            raise ValueError("card declined", 42)
        except ValueError as exc:
            exc_info = (type(exc), exc, exc.__traceback__)
    record = logging.LogRecord("app.checkout", level, __file__, 7, "order %s placed", ("A-1",), exc_info)
    for key, value in extras.items():
        setattr(record, key, value)
    return record


@settings(max_examples=120, deadline=None)
@given(
    records=st.lists(st.tuples(
        st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]),
        st.dictionaries(NAMES, st.one_of(SCALARS, SCALARS, OTHERS), max_size=6),
        st.sampled_from([None, ("otel.event.name", "order_placed"), ("event.name", "legacy")]),
        st.booleans(),
        st.booleans(),
    ), min_size=1, max_size=6),
)
def test_the_lane_exports_what_the_sdk_path_exports(
    records: list[tuple[int, dict[str, Any], tuple[str, str] | None, bool, bool]], tracer: Any
) -> None:
    sdk_provider, sdk_out, _ = pipeline_pair(lane=False)
    lane_provider, lane_out, lane = pipeline_pair(lane=True)
    sdk_handler = TelemetryHandler(None, sdk_provider, io.StringIO(), code_location=True)
    lane_handler = TelemetryHandler(None, lane_provider, io.StringIO(), code_location=True, lane=lane)
    for level, extras, event, failing, in_span in records:
        record = make_record(level, {**extras, **dict([event] if event else [])}, failing)
        if in_span:
            with tracer.start_as_current_span("work"):
                sdk_handler.handle(record)
                lane_handler.handle(record)
        else:
            sdk_handler.handle(record)
            lane_handler.handle(record)
    sdk_provider.force_flush()
    lane_provider.force_flush()
    assert lane_out.records() == sdk_out.records()
    assert len(sdk_out.records()) == len(records)
    sdk_provider.shutdown()
    lane_provider.shutdown()


def test_the_lane_takes_scalar_records_and_leaves_the_rest_to_the_sdk() -> None:
    provider, exporter, lane = pipeline_pair(lane=True)
    handler = TelemetryHandler(None, provider, io.StringIO(), lane=lane)
    handler.handle(make_record(logging.INFO, {"order_id": "A-1", "items": 3}, failing=False))
    handler.handle(make_record(logging.INFO, {"tags": ["a", "b"]}, failing=False))
    provider.force_flush()
    assert (exporter.lane_items, exporter.sdk_items) == (1, 1)  # the list went the SDK's way
    records = exporter.records()
    assert [r["body"]["stringValue"] for r in records] == ["order A-1 placed", "order A-1 placed"]
    provider.shutdown()


def test_a_processor_added_later_turns_the_lane_off() -> None:
    provider, exporter, lane = pipeline_pair(lane=True)
    assert lane is not None
    seen: list[Any] = []

    class Watching(BatchLogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            seen.append(log_record)

    provider.add_log_record_processor(Watching(Encoded()))
    handler = TelemetryHandler(None, provider, io.StringIO(), lane=lane)
    handler.handle(make_record(logging.INFO, {"order_id": "A-1"}, failing=False))
    provider.force_flush()
    assert len(seen) == 1
    assert not isinstance(seen[0], LaneRecord)  # the user's processor sees the SDK record
    assert len(exporter.records()) == 1
    provider.shutdown()


@pytest.mark.filterwarnings("ignore:Log record attributes were dropped")
def test_the_attribute_count_limit_sends_a_record_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "2")
    sdk_provider, sdk_out, _ = pipeline_pair(lane=False)
    lane_provider, lane_out, lane = pipeline_pair(lane=True)
    record = make_record(logging.INFO, {"a": 1, "b": 2, "c": 3}, failing=False)
    TelemetryHandler(None, sdk_provider, io.StringIO()).handle(record)
    TelemetryHandler(None, lane_provider, io.StringIO(), lane=lane).handle(record)
    sdk_provider.force_flush()
    lane_provider.force_flush()
    assert lane_out.records() == sdk_out.records()
    assert sdk_out.records()[0]["droppedAttributesCount"] == 1


def test_no_lane_with_the_sdks_own_log_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    provider = QmLoggerProvider(shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(Encoded())
    provider.add_own_processor(processor)
    assert make_lane(provider, LogRecordLimits(), [processor]) is None
    provider.shutdown()


# --- the request log written from its fields ------------------------------------------------------

@contextmanager
def installed() -> Iterator[tuple[TelemetryHandler, io.StringIO, QmLoggerProvider, Encoded]]:
    """qm-otel's pipeline as ``install_root_handlers`` leaves it: one handler on the root, its filter."""
    provider, exporter, lane = pipeline_pair(lane=True)
    stream = io.StringIO()
    handler = TelemetryHandler(JsonFormatter("svc"), provider, stream, lane=lane)
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    for old in saved:
        root.removeHandler(old)
    root.addHandler(pipeline._tag(handler))
    root.setLevel(logging.DEBUG)
    try:
        yield handler, stream, provider, exporter
    finally:
        root.removeHandler(handler)
        for old in saved:
            root.addHandler(old)
        root.setLevel(level)
        provider.shutdown()


class _Route:
    path = "/orders/{order_id}"


def _scope(method: str, path: str, query: bytes, client: tuple[str, int] | None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "client": client,
            "route": _Route()}


def _without_time(line: str) -> dict[str, Any]:
    data = dict(json.loads(line))
    data.pop("timestamp")
    return data


def _otlp_without_time(exporter: Encoded) -> list[dict[str, Any]]:
    records = exporter.records()
    for record in records:
        record.pop("timeUnixNano", None)
    return records


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.text(min_size=1, max_size=20).map(lambda p: "/" + p),
    query=st.binary(max_size=40),
    status=st.sampled_from([200, 201, 404, 500, 503]),
    duration_ms=st.floats(min_value=0, max_value=5000),
    user=st.one_of(st.none(), st.fixed_dictionaries({"user.id": st.text(max_size=8)})),
    client=st.one_of(st.none(), st.tuples(st.just("10.0.0.9"), st.integers(1, 65535))),
    routed=st.booleans(),
    in_span=st.booleans(),
)
def test_the_request_log_written_directly_equals_the_logging_record(
    tracer: Any, method: str, path: str, query: bytes, status: int, duration_ms: float, user: dict[str, str] | None,
    client: tuple[str, int] | None, routed: bool, in_span: bool,
) -> None:
    with installed() as (handler, stream, provider, exporter):
        _write_both_ways(handler, tracer, method, path, query, status, duration_ms, user, client, routed, in_span)
        direct, stdlib = stream.getvalue().rstrip("\n").split("\n")  # not splitlines(): U+0085 is no line end here
        assert _without_time(direct) == _without_time(stdlib)
        provider.force_flush()
        records = _otlp_without_time(exporter)
        assert len(records) == 2, records
        assert records[0] == records[1]


def _write_both_ways(
    handler: TelemetryHandler, tracer: Any, method: str, path: str, query: bytes, status: int, duration_ms: float,
    user: dict[str, str] | None, client: tuple[str, int] | None, routed: bool, in_span: bool,
) -> None:
    request_log = RequestLog(sensitive=("token",))
    requests = logging.getLogger("qm_otel.requests")
    scope = _scope(method, path, query, client)
    route = _Route.path if routed else None

    def write_both() -> None:
        assert pipeline.direct_handler(requests) is handler
        request_log(scope, status, duration_ms, route, user)  # directly
        passthrough = logging.Filter()  # a filter on the logger: now the stdlib path must be taken
        requests.addFilter(passthrough)
        try:
            assert pipeline.direct_handler(requests) is None
            request_log(scope, status, duration_ms, route, user)
        finally:
            requests.removeFilter(passthrough)

    if in_span:
        with tracer.start_as_current_span("request"):
            write_both()
    else:
        write_both()


def test_a_users_handler_on_the_request_logger_sees_the_record() -> None:
    with installed() as (_handler, stream, _provider, _exporter):
        seen: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        requests = logging.getLogger("qm_otel.requests")
        keep = Keep()
        requests.addHandler(keep)
        try:
            RequestLog()(_scope("GET", "/orders/7", b"", None), 200, 3.0, _Route.path)
        finally:
            requests.removeHandler(keep)
        assert [record.getMessage() for record in seen] == ["GET /orders/{order_id} 200 3.0ms"]
        assert '"message":"GET /orders/{order_id} 200 3.0ms"' in stream.getvalue()


def test_a_file_handler_or_text_line_takes_the_logging_path() -> None:
    with installed() as (handler, _stream, _provider, _exporter):
        requests = logging.getLogger("qm_otel.requests")
        assert pipeline.direct_handler(requests) is handler
        handler.setFormatter(logging.Formatter("%(message)s"))
        assert pipeline.direct_handler(requests) is None
        handler.setFormatter(JsonFormatter("svc"))
        other = logging.NullHandler()
        logging.getLogger().addHandler(other)
        try:
            assert pipeline.direct_handler(requests) is None
        finally:
            logging.getLogger().removeHandler(other)
        factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(functools.partial(factory))
        try:
            assert pipeline.direct_handler(requests) is None
        finally:
            logging.setLogRecordFactory(factory)


def test_the_request_log_in_an_asgi_app_is_written_once() -> None:
    from qm_otel.integrations.request_log import RequestLogMiddleware

    with installed() as (_handler, stream, provider, exporter):

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            del receive
            scope["route"] = _Route()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}", "more_body": False})

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            del message

        asyncio.run(RequestLogMiddleware(app)({**_scope("GET", "/orders/7", b"", None), "headers": []}, receive, send))
        provider.force_flush()
        [line] = [line for line in stream.getvalue().splitlines() if '"qm_otel.requests"' in line]
        assert json.loads(line)["http_route"] == "/orders/{order_id}"
        [record] = [record for record in exporter.records() if record["scope"]["name"] != "asyncio"]
        assert record["scope"]["name"] == "qm_otel.requests"
