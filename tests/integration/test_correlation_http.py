"""Correlation IDs become trace IDs, end to end: real uvicorn, both launch paths, the OTLP receiver."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import Log, OtlpReceiver, Span

PLACES = ["in dependency", "in handler", "in task", "in executor", "in background"]


@pytest.fixture(scope="module")
def module_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().start() as server:
        yield server


@pytest.fixture(scope="module", params=list(svc.CORRELATED))
def service(request: pytest.FixtureRequest, module_receiver: OtlpReceiver) -> Iterator[svc.Service]:
    app, zero_code = svc.CORRELATED[request.param]
    with svc.start(app, svc.base_env(module_receiver.endpoint), zero_code=zero_code) as running:
        yield running


def server_span(receiver: OtlpReceiver, trace_id: str, name: str = "GET /log") -> Span:
    return receiver.wait_for(
        lambda r: next((s for s in r.snapshot()[0] if s.trace_id == trace_id and s.name == name), None)
    )


def logs_of(receiver: OtlpReceiver, trace_id: str) -> list[Log]:
    """The trace's log records, once every place has written its record (the background task writes last)."""

    def complete(r: OtlpReceiver) -> list[Log] | None:
        found = [g for g in r.snapshot()[1] if g.trace_id == trace_id]
        return found if set(PLACES) <= {str(g.body) for g in found} else None

    return receiver.wait_for(complete)


def assert_correlated(receiver: OtlpReceiver, response: httpx.Response, trace_id: str, corr: str) -> None:
    assert response.status_code == 200
    assert response.headers["x-correlation-id"] == corr
    assert response.json() == {"correlation_id": corr, "in_dependency": corr}
    span = server_span(receiver, trace_id)
    assert span.parent_span_id == ""  # a true root: no invented parent
    assert span.attributes["correlation.id"] == corr
    records = logs_of(receiver, trace_id)
    assert sorted(str(g.body) for g in records if str(g.body) in PLACES) == sorted(PLACES)
    for record in records:
        assert record.attributes.get("correlation_id") == corr, record.body
        assert record.span_id  # written inside a span of this trace


def test_a_32_hex_id_is_the_trace_id(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    corr = uuid.uuid4().hex.upper()
    response = service.get("/log", headers={"X-Correlation-ID": corr})
    assert_correlated(module_receiver, response, corr.lower(), corr)


def test_a_uuid_with_dashes_is_the_trace_id(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    corr = str(uuid.uuid4())
    response = service.get("/log", headers={"X-Correlation-ID": corr})
    assert_correlated(module_receiver, response, corr.replace("-", ""), corr)


def test_any_other_id_maps_through_sha256(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    corr = f"order-{uuid.uuid4().hex[:8]}"
    response = service.get("/log", headers={"X-Request-ID": corr})  # the second header name works too
    assert_correlated(module_receiver, response, hashlib.sha256(corr.encode()).digest()[:16].hex(), corr)


def test_no_id_gets_a_new_trace_id_which_is_the_id(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    response = service.get("/log")
    corr = response.headers["x-correlation-id"]
    assert len(corr) == 32
    assert_correlated(module_receiver, response, corr, corr)


def test_a_rejected_id_is_replaced_counted_and_never_written(
    service: svc.Service, module_receiver: OtlpReceiver
) -> None:
    bad = "bad value; DROP TABLE " + uuid.uuid4().hex
    response = service.get("/log", headers={"X-Correlation-ID": bad})
    corr = response.headers["x-correlation-id"]
    assert corr != bad
    assert len(corr) == 32
    assert_correlated(module_receiver, response, corr, corr)
    module_receiver.wait_for(
        lambda r: any(p.name == "qm_otel.correlation.rejected" and p.attributes.get("reason") == "characters"
                      for p in r.snapshot()[2])
    )
    spans, logs, _ = module_receiver.snapshot()
    assert bad not in repr(spans)
    assert bad not in repr(logs)
    assert bad not in service.output()


def test_a_valid_traceparent_wins_and_the_id_stays_an_attribute(
    service: svc.Service, module_receiver: OtlpReceiver
) -> None:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    corr = f"order-{uuid.uuid4().hex[:8]}"
    response = service.get("/log", headers={"traceparent": f"00-{trace_id}-{parent}-01", "X-Correlation-ID": corr})
    assert response.headers["x-correlation-id"] == corr
    span = server_span(module_receiver, trace_id)
    assert span.parent_span_id == parent
    assert span.attributes["correlation.id"] == corr
    assert {g.attributes["correlation_id"] for g in logs_of(module_receiver, trace_id)} == {corr}


@pytest.mark.parametrize("shape", ["two headers", "comma-joined"])
def test_two_traceparents_are_both_ignored_and_the_correlation_rules_apply(
    service: svc.Service, module_receiver: OtlpReceiver, shape: str
) -> None:
    first = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    second = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    corr = f"order-{uuid.uuid4().hex[:8]}"
    parents = [("traceparent", first), ("traceparent", second)] if shape == "two headers" else [
        ("traceparent", f"{first},{second}")]
    response = service.get("/log", headers=[*parents, ("tracestate", "vendor=abc"), ("X-Correlation-ID", corr)])
    assert response.headers["x-correlation-id"] == corr
    trace_id = hashlib.sha256(corr.encode()).digest()[:16].hex()  # the correlation ID's trace, a new root
    span = server_span(module_receiver, trace_id)
    assert span.parent_span_id == ""
    assert first.split("-")[1] not in repr(module_receiver.snapshot()[0])
    assert second.split("-")[1] not in repr(module_receiver.snapshot()[0])


def test_errors_and_unknown_routes_carry_the_header(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    for path, status in [("/boom", 500), ("/no-such-route", 404)]:
        corr = f"err-{uuid.uuid4().hex[:8]}"
        response = service.get(path, headers={"X-Correlation-ID": corr})
        assert response.status_code == status
        assert response.headers["x-correlation-id"] == corr
        trace_id = hashlib.sha256(corr.encode()).digest()[:16].hex()
        module_receiver.wait_for(lambda r, t=trace_id: any(s.trace_id == t for s in r.snapshot()[0]))
    fresh = service.get("/boom")
    assert len(fresh.headers["x-correlation-id"]) == 32


def test_stdout_json_lines_carry_the_correlation(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    corr = f"stdout-{uuid.uuid4().hex[:8]}"
    service.get("/log", headers={"X-Correlation-ID": corr})
    trace_id = hashlib.sha256(corr.encode()).digest()[:16].hex()
    logs_of(module_receiver, trace_id)
    lines = [json.loads(line) for line in service.output().splitlines() if corr in line]
    assert {line["message"] for line in lines} >= set(PLACES)
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert {line["correlation_id"] for line in lines} == {corr}


def test_two_services_continue_one_trace(service: svc.Service, module_receiver: OtlpReceiver) -> None:
    with svc.start("tests.integration.apps.correlated_setup:app", svc.base_env(module_receiver.endpoint)) as downstream:
        corr = f"chain-{uuid.uuid4().hex[:8]}"
        response = service.get("/call", params={"url": f"{downstream.url}/log"},
                               headers={"X-Correlation-ID": corr})
        assert response.status_code == 200
        body = response.json()
        assert body["downstream"]["correlation_id"] == corr
        assert body["downstream_header"] == corr
        trace_id = hashlib.sha256(corr.encode()).digest()[:16].hex()
        upstream_span = server_span(module_receiver, trace_id, "GET /call")
        downstream_span = server_span(module_receiver, trace_id, "GET /log")
        client = module_receiver.wait_for(
            lambda r: next((s for s in r.snapshot()[0] if s.trace_id == trace_id and s.kind == 3), None)
        )
        assert client.parent_span_id == upstream_span.span_id
        assert downstream_span.parent_span_id == client.span_id
        assert downstream_span.resource["service.instance.id"] != upstream_span.resource["service.instance.id"]
        assert client.attributes["correlation.id"] == corr


def test_untrusted_edge_starts_a_new_trace(module_receiver: OtlpReceiver) -> None:
    env = svc.base_env(module_receiver.endpoint, QM_OTEL_TRUST_INCOMING_IDS="false")
    with svc.start("tests.integration.apps.correlated_setup:app", env) as edge:
        corr = uuid.uuid4().hex
        traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        response = edge.get("/log", headers={"X-Correlation-ID": corr, "traceparent": traceparent})
        fresh = response.headers["x-correlation-id"]
        assert fresh != corr
        span = server_span(module_receiver, fresh)
        assert span.parent_span_id == ""
        assert span.attributes["correlation.id"] == fresh
        assert span.attributes["correlation.incoming_id"] == corr


def test_tracestate_is_forwarded_only_when_valid_and_within_512_characters(module_receiver: OtlpReceiver) -> None:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{parent}-01"
    members = [f"k{n}={'v' * 40}" for n in range(20)]  # 20 valid members, 899 characters
    with svc.start("tests.integration.apps.outbound:app", svc.base_env(module_receiver.endpoint)) as service:
        long = service.get("/relay", headers={"traceparent": traceparent, "tracestate": ",".join(members)}).json()
        invalid = service.get("/relay", headers={"traceparent": traceparent,
                                                 "tracestate": "a=1,B=2"}).json()  # an upper-case key
        duplicated = service.get("/relay", headers={"traceparent": traceparent, "tracestate": "a=1,b=2,a=3"}).json()
    assert long["traceparent"].split("-")[1] == trace_id
    assert long["tracestate"] == ",".join(members[:11])  # the right-most went until 512 characters fit
    assert invalid["traceparent"].split("-")[1] == trace_id  # the valid traceparent is kept ...
    assert invalid["tracestate"] is None  # ... the invalid tracestate is not forwarded
    assert duplicated["tracestate"] == "a=1,b=2"  # Level 2: a duplicated key's first member kept, not the whole lost
