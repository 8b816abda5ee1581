"""Correlation beyond FastAPI routes: plain Starlette apps, non-HTTP work, hostile header bytes."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qm_otel.core.correlation import parse
from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

STARLETTE = {
    "setup": ("tests.integration.apps.starlette_setup:app", False),
    "opentelemetry-instrument": ("tests.integration.apps.starlette_app:app", True),
}


def sha_trace_id(value: str) -> str:
    return hashlib.sha256(value.encode()).digest()[:16].hex()


@pytest.mark.parametrize("launch", STARLETTE)
def test_a_plain_starlette_app_is_correlated(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = STARLETTE[launch]
    with svc.start(app, svc.base_env(receiver.endpoint), zero_code=zero_code) as service:
        response = service.get("/things/7", headers={"X-Correlation-ID": "thing-7"})
        assert response.json() == {"correlation_id": "thing-7"}
        assert response.headers["x-correlation-id"] == "thing-7"
        missing = service.get("/nothing-here", headers={"X-Correlation-ID": "thing-404"})
        assert missing.status_code == 404
        assert missing.headers["x-correlation-id"] == "thing-404"
        trace_id = sha_trace_id("thing-7")
        span = receiver.wait_for(
            lambda r: next((s for s in r.snapshot()[0] if s.trace_id == trace_id), None)
        )
        record = receiver.wait_for(lambda r: next((g for g in r.snapshot()[1] if g.body == "thing 7"), None))
    assert span.name == "GET /things/{thing_id}"
    assert span.parent_span_id == ""
    assert span.attributes["correlation.id"] == "thing-7"
    assert record.trace_id == trace_id
    assert record.attributes["correlation_id"] == "thing-7"
    assert len([s for s in receiver.snapshot()[0] if s.trace_id == trace_id]) == 1


JOB_SCRIPT = textwrap.dedent(
    """
    import logging
    import qm_otel
    from opentelemetry import trace
    qm_otel.setup(log_format="json")
    log = logging.getLogger("job")
    with trace.get_tracer("outer").start_as_current_span("unrelated-outer"):
        with qm_otel.correlation("job-42", name="nightly-report"):
            log.info("inside %s", qm_otel.correlation_id())
            with trace.get_tracer("job").start_as_current_span("step"):
                log.info("in step")
    log.info("after: %s", qm_otel.correlation_id())
    qm_otel.shutdown()
    """
)


def test_correlation_block_for_jobs_and_scripts(receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint)
    result = subprocess.run([sys.executable, "-c", JOB_SCRIPT], env=env, capture_output=True, timeout=120,
                            check=False, text=True)
    assert result.returncode == 0, result.stderr
    trace_id = sha_trace_id("job-42")
    spans, logs, _ = receiver.snapshot()
    by_name = {s.name: s for s in spans}
    assert by_name["nightly-report"].trace_id == trace_id
    assert by_name["nightly-report"].parent_span_id == ""  # a root even inside another span
    assert by_name["step"].parent_span_id == by_name["nightly-report"].span_id
    assert by_name["step"].attributes["correlation.id"] == "job-42"
    assert by_name["unrelated-outer"].trace_id != trace_id
    inside = {g.body: g for g in logs}
    assert inside["inside job-42"].trace_id == trace_id
    assert inside["in step"].span_id == by_name["step"].span_id
    assert inside["in step"].attributes["correlation_id"] == "job-42"
    assert inside["after: None"].trace_id != trace_id
    stdout = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {line["correlation_id"] for line in stdout if line["message"] in ("inside job-42", "in step")} == {
        "job-42"}


# --- hostile header bytes, over a raw socket, at a real service ----------------------------------

#: bytes an HTTP/1.1 parser lets through in a header value (RFC 9110 field-vchar, SP, HTAB, obs-text)
WIRE_BYTES = st.binary(max_size=300).map(
    lambda raw: bytes(b for b in raw if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80).strip(b" \t")
)
CORRELATION_HEADER = re.compile(rb"^x-correlation-id: ?(.*?)\r$", re.IGNORECASE | re.MULTILINE)


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[svc.Service, OtlpReceiver]]:
    with (OtlpReceiver().start() as receiver,
          svc.start("tests.integration.apps.correlated_setup:app", svc.base_env(receiver.endpoint)) as service):
        yield service, receiver


def raw_request(port: int, header_name: bytes, value: bytes) -> bytes:
    head = b"GET /log HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    request = head + header_name + b": " + value + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_any_header_bytes_get_a_valid_id_and_a_rejected_value_is_never_written(
    fuzz_target: tuple[svc.Service, OtlpReceiver],
) -> None:
    service, receiver = fuzz_target
    rejected: list[bytes] = []
    sent = 0

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=WIRE_BYTES, header=st.sampled_from([b"X-Correlation-ID", b"X-Request-ID", b"x-correlation-id"]))
    def one_request(value: bytes, header: bytes) -> None:
        nonlocal sent
        response = raw_request(service.port, header, value)
        sent += 1
        head, _, _ = response.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.1 200 ", head), head[:100]
        ids = CORRELATION_HEADER.findall(head)
        assert len(ids) == 1
        answered = ids[0].decode("ascii")
        assert parse(answered) == answered
        accepted = parse(value)
        if accepted is not None:
            assert answered == accepted
        else:
            assert answered.encode() != value
            rejected.append(value)

    one_request()
    assert rejected, "the strategy produced no value to reject"
    receiver.wait_for(lambda r: sum(g.body == "in handler" for g in r.snapshot()[1]) >= sent)
    spans, logs, _ = receiver.snapshot()
    exported = (repr(spans) + repr(logs)).encode("utf-8", "backslashreplace")
    printed = service.output().encode("utf-8", "backslashreplace")
    for value in (v for v in rejected if len(v) >= 6):  # shorter ones could occur by chance
        as_text = value.decode("latin-1").encode("utf-8", "backslashreplace")
        assert value not in printed, value
        assert as_text not in exported, value
        assert as_text not in printed, value
