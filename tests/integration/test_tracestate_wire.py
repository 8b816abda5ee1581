"""W3C Trace Context on the wire: the specification's test suite, replayed against a real uvicorn service.

``w3c/trace-context``'s ``test/test.py`` (the harness) sends a request with given header lines to the
service's test endpoint; the service calls the harness back (the relay, httpx, instrumented) and the
harness checks the ``traceparent`` and ``tracestate`` lines it receives. Here the service is
``tests/integration/apps/tracecontext_relay.py`` on both launch paths, the harness's receiving end is
:class:`Recorder` (it keeps every header line of every callback, in order), and every case of the
suite's ``TraceContextTest``, ``AdvancedTest`` and ``TraceContext2Test`` is a step below, named after
its test method (``w3c_<method>_<n>``), with the suite's assertion made exact where qm-otel's behaviour
is one of the choices the specification leaves open (duplicated keys: the first is kept). The issue's
own cases follow (``issue_*``), then baggage and the correlation header sent in two lines.

The requests go out through a socket, line by line: httpx (h11) refuses a header value with space or
tab at either end, which the suite's OWS cases send, and the lines must reach the service exactly as
written (repeated, empty, in any casing); ``test_the_sender_puts_each_line_on_the_wire`` checks that
against the recorder.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

#: the relay app by launch path: the app to serve and whether it runs under ``opentelemetry-instrument``
RELAYS = {
    "setup": ("tests.integration.apps.tracecontext_relay_setup:app", False),
    "opentelemetry-instrument": ("tests.integration.apps.tracecontext_relay:app", True),
}

Lines = tuple[tuple[str, str], ...]

# --- the harness's receiving end ------------------------------------------------------------------


class Recorder:
    """An HTTP server in the test process that keeps the header lines of every request, by path."""

    def __init__(self) -> None:
        received: dict[str, list[Lines]] = {}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    received.setdefault(self.path, []).append(tuple(self.headers.items()))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.received = received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def send(port: int, path: str, lines: Lines, body: bytes = b"") -> tuple[int, Lines, bytes]:
    """POST ``body`` with exactly ``lines`` as its header lines (and Host, length, close): status, response lines."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close", *(f"{name}: {value}" for name, value in lines)]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    response = tuple((n.strip(), v.strip()) for n, v in (line.split(":", 1) for line in header_lines))
    return int(status_line.split(" ")[1]), response, content


# --- reading a callback as the harness does ---------------------------------------------------------

TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
#: the suite's own member grammar (``test/tracecontext/tracestate.py``): Level 2 keys, values
MEMBER = re.compile(r"([0-9a-z][_0-9a-z\-*/@]{0,255})="
                    r"([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])")
DELIMITER = re.compile(r"[ \t]*,[ \t]*")


def values(lines: Lines, name: str) -> list[str]:
    return [value for key, value in lines if key.lower() == name]


def traceparent_of(lines: Lines) -> tuple[str, str, str, int]:
    """Version, trace ID, parent ID and flags of the one ``traceparent`` line the callback must carry."""
    found = values(lines, "traceparent")
    assert len(found) == 1, f"expected one traceparent line, got {found!r}"
    match = TRACEPARENT.fullmatch(found[0])
    assert match, f"not a valid traceparent: {found[0]!r}"
    return match[1], match[2], match[3], int(match[4], 16)


def tracestate_of(lines: Lines) -> tuple[str, ...]:
    """Every member of the callback's ``tracestate`` lines, in order; each must follow the grammar."""
    found = values(lines, "tracestate")
    assert all(line.strip() for line in found), f"an empty tracestate line was sent: {found!r}"
    members = tuple(m for line in found for m in DELIMITER.split(line.strip(" \t")) if m)
    for member in members:
        assert MEMBER.fullmatch(member), f"an invalid member was forwarded: {member!r}"
    return members


# --- the cases --------------------------------------------------------------------------------------

TRACE = "12345678901234567890123456789012"
PARENT = "1234567890123456"
VALID = f"00-{TRACE}-{PARENT}-00"
KEPT, NEW, ANY = "kept", "new", "any"


@dataclass(frozen=True)
class Step:
    """One request of a case: the lines sent and what the callback(s) must carry.

    ``trace``: ``kept`` (the sent trace ID continues, under a new parent ID), ``new`` (a new trace ID:
    none of the 32-hex runs sent, not all zeros) or ``any``. ``state``: the exact ``tracestate``
    members forwarded, in order; ``()`` means no ``tracestate`` line at all.
    """

    lines: Lines
    trace: str = ANY
    state: tuple[str, ...] = ()
    callbacks: int = 1
    random_flag: bool = False


def tp(value: str, name: str = "traceparent") -> tuple[str, str]:
    return (name, value)


def ts(value: str, name: str = "tracestate") -> tuple[str, str]:
    return (name, value)


def step(*lines: tuple[str, str], trace: str = ANY, state: tuple[str, ...] = (), callbacks: int = 1,
         random_flag: bool = False) -> Step:
    return Step(tuple(lines), trace, state, callbacks, random_flag)


BARS = [f"bar{n:02}={n:02}" for n in range(1, 34)]
KEY_CHARS = "".join(map(chr, range(0x61, 0x7B))) + "0123456789_-*/"
VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
TENANT_241 = "t" * 241 + "@" + "v" * 14
TENANT_242 = "t" * 242 + "@v"
SYSTEM_15 = "t@" + "v" * 15
LONG_MEMBERS = [f"k{n}={'v' * 40}" for n in range(20)]  # 899 characters: the right-most go beyond 512

#: ``test/test.py`` at w3c/trace-context acab820 (2026-06-30), every method, every request in it
W3C: dict[str, list[Step]] = {
    "test_both_traceparent_and_tracestate_missing": [step()],
    "test_traceparent_included_tracestate_missing": [step(tp(f"00-{TRACE}-{PARENT}-01"), trace=KEPT)],
    "test_traceparent_duplicated": [
        step(tp(f"00-{TRACE[:-1]}1-{PARENT}-01"), tp(f"00-{TRACE}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_header_name": [step(tp(VALID, "trace-parent"), trace=NEW),
                                     step(tp(VALID, "trace.parent"), trace=NEW)],
    "test_traceparent_header_name_valid_casing": [step(tp(VALID, name), trace=KEPT)
                                                  for name in ("TraceParent", "TrAcEpArEnT", "TRACEPARENT")],
    "test_traceparent_version_0x00": [step(tp(f"00-{TRACE}-{PARENT}-01."), trace=NEW),
                                      step(tp(f"00-{TRACE}-{PARENT}-01-what-the-future-will-be-like"), trace=NEW)],
    "test_traceparent_version_0xcc": [step(tp(f"cc-{TRACE}-{PARENT}-01"), trace=KEPT),
                                      step(tp(f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like"), trace=KEPT),
                                      step(tp(f"cc-{TRACE}-{PARENT}-01.what-the-future-will-be-like"), trace=NEW)],
    "test_traceparent_version_0xff": [step(tp(f"ff-{TRACE}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_version_illegal_characters": [step(tp(f".0-{TRACE}-{PARENT}-01"), trace=NEW),
                                                    step(tp(f"0.-{TRACE}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_version_too_long": [step(tp(f"000-{TRACE}-{PARENT}-01"), trace=NEW),
                                          step(tp(f"0000-{TRACE}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_version_too_short": [step(tp(f"0-{TRACE}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_trace_id_all_zero": [step(tp(f"00-{'0' * 32}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_trace_id_illegal_characters": [step(tp(f"00-.{TRACE[1:]}-{PARENT}-01"), trace=NEW),
                                                     step(tp(f"00-{TRACE[:-1]}.-{PARENT}-01"), trace=NEW)],
    "test_traceparent_trace_id_too_long": [step(tp(f"00-{TRACE}3-{PARENT}-01"), trace=NEW)],
    "test_traceparent_trace_id_too_short": [step(tp(f"00-{TRACE[:-1]}-{PARENT}-01"), trace=NEW)],
    "test_traceparent_parent_id_all_zero": [step(tp(f"00-{TRACE}-{'0' * 16}-01"), trace=NEW)],
    "test_traceparent_parent_id_illegal_characters": [step(tp(f"00-{TRACE}-.{PARENT[1:]}-01"), trace=NEW),
                                                      step(tp(f"00-{TRACE}-{PARENT[:-1]}.-01"), trace=NEW)],
    "test_traceparent_parent_id_too_long": [step(tp(f"00-{TRACE}-{PARENT}7-01"), trace=NEW)],
    "test_traceparent_parent_id_too_short": [step(tp(f"00-{TRACE}-{PARENT[:-1]}-01"), trace=NEW)],
    "test_traceparent_trace_flags_illegal_characters": [step(tp(f"00-{TRACE}-{PARENT}-.0"), trace=NEW),
                                                        step(tp(f"00-{TRACE}-{PARENT}-0."), trace=NEW)],
    "test_traceparent_trace_flags_too_long": [step(tp(f"00-{TRACE}-{PARENT}-001"), trace=NEW)],
    "test_traceparent_trace_flags_too_short": [step(tp(f"00-{TRACE}-{PARENT}-1"), trace=NEW)],
    "test_traceparent_ows_handling": [step(tp(f"{before}00-{TRACE}-{PARENT}-01{after}"), trace=KEPT)
                                      for before, after in [(" ", ""), ("\t", ""), ("", " "), ("", "\t"),
                                                            ("\t ", " \t")]],
    "test_tracestate_included_traceparent_missing": [step(ts("foo=1"), trace=NEW),
                                                     step(ts("foo=1,bar=2"), trace=NEW)],
    "test_tracestate_included_traceparent_included": [
        step(tp(VALID), ts("foo=1,bar=2"), trace=KEPT, state=("foo=1", "bar=2"))],
    "test_tracestate_header_name": [step(tp(VALID), ts("foo=1", "trace-state"), trace=KEPT),
                                    step(tp(VALID), ts("foo=1", "trace.state"), trace=KEPT)],
    "test_tracestate_header_name_valid_casing": [step(tp(VALID), ts("foo=1", name), trace=KEPT, state=("foo=1",))
                                                 for name in ("TraceState", "TrAcEsTaTe", "TRACESTATE")],
    "test_tracestate_empty_header": [step(tp(VALID), ts(""), trace=KEPT),
                                     step(tp(VALID), ts("foo=1"), ts(""), trace=KEPT, state=("foo=1",)),
                                     step(tp(VALID), ts(""), ts("foo=1"), trace=KEPT, state=("foo=1",))],
    "test_tracestate_multiple_headers_different_keys": [
        step(tp(VALID), ts("foo=1,bar=2"), ts("rojo=1,congo=2"), ts("baz=3"), trace=KEPT,
             state=("foo=1", "bar=2", "rojo=1", "congo=2", "baz=3"))],
    # the suite accepts either duplicate, or both: qm-otel keeps the first (left-most) member of a key
    "test_tracestate_duplicated_keys": [step(tp(VALID), ts("foo=1,foo=1"), trace=KEPT, state=("foo=1",)),
                                        step(tp(VALID), ts("foo=1,foo=2"), trace=KEPT, state=("foo=1",)),
                                        step(tp(VALID), ts("foo=1"), ts("foo=1"), trace=KEPT, state=("foo=1",)),
                                        step(tp(VALID), ts("foo=1"), ts("foo=2"), trace=KEPT, state=("foo=1",))],
    "test_tracestate_all_allowed_characters": [
        step(tp(VALID), ts(f"{KEY_CHARS}={VALUE_CHARS}"), trace=KEPT, state=(f"{KEY_CHARS}={VALUE_CHARS}",)),
        step(tp(VALID), ts(f"{KEY_CHARS}@a-z0-9_-*/={VALUE_CHARS}"), trace=KEPT,
             state=(f"{KEY_CHARS}@a-z0-9_-*/={VALUE_CHARS}",))],
    "test_tracestate_ows_handling": [
        *(step(tp(VALID), ts(line), trace=KEPT, state=("foo=1", "bar=2", "baz=3"))
          for line in ("foo=1 \t , \t bar=2, \t baz=3", "foo=1\t \t,\t \tbar=2,\t \tbaz=3")),
        *(step(tp(VALID), ts(line), trace=KEPT, state=("foo=1",))
          for line in (" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"))],
    "test_tracestate_key_illegal_characters": [step(tp(VALID), ts(line), trace=KEPT)
                                               for line in ("foo =1", "FOO=1", "foo.bar=1")],
    "test_tracestate_key_illegal_vendor_format": [
        step(tp(VALID), ts("foo@=1,bar=2"), trace=KEPT, state=("foo@=1", "bar=2")),
        step(tp(VALID), ts("@foo=1,bar=2"), trace=KEPT),
        step(tp(VALID), ts("foo@@bar=1,bar=2"), trace=KEPT, state=("foo@@bar=1", "bar=2")),
        step(tp(VALID), ts("foo@bar@baz=1,bar=2"), trace=KEPT, state=("foo@bar@baz=1", "bar=2"))],
    "test_tracestate_member_count_limit": [
        step(tp(VALID), *(ts(",".join(BARS[:32][i:i + 10])) for i in range(0, 32, 10)), trace=KEPT,
             state=tuple(BARS[:32])),
        step(tp(VALID), *(ts(",".join(BARS[i:i + 10])) for i in range(0, 33, 10)), trace=KEPT)],
    "test_tracestate_key_length_limit": [
        step(tp(VALID), ts("foo=1"), ts("z" * 256 + "=1"), trace=KEPT, state=("foo=1", "z" * 256 + "=1")),
        step(tp(VALID), ts("foo=1"), ts("z" * 257 + "=1"), trace=KEPT),
        *(step(tp(VALID), ts("foo=1"), ts(key + "=1"), trace=KEPT, state=("foo=1", key + "=1"))
          for key in (TENANT_241, TENANT_242, SYSTEM_15))],
    "test_tracestate_value_illegal_characters": [step(tp(VALID), ts("foo=bar=baz"), trace=KEPT),
                                                 step(tp(VALID), ts("foo=,bar=3"), trace=KEPT)],
    "test_multiple_requests_with_valid_traceparent": [step(tp(f"00-{TRACE}-{PARENT}-01"), trace=KEPT, callbacks=3)],
    "test_multiple_requests_without_traceparent": [step(callbacks=3)],
    "test_multiple_requests_with_illegal_traceparent": [step(tp(f"00-{'0' * 32}-{PARENT}-01"), trace=NEW,
                                                             callbacks=3)],
    "test_propagates_random_flag": [step(tp(f"00-{TRACE}-{PARENT}-02"), trace=KEPT, random_flag=True)],
}

#: the issue's own reports and the grammar's edges, beyond the suite
ISSUE: dict[str, list[Step]] = {
    "three_lines_and_an_empty_one_in_order": [
        step(tp(VALID), ts("foo=1,bar=2"), ts(""), ts("rojo=1,congo=2"), ts("baz=3"), trace=KEPT,
             state=("foo=1", "bar=2", "rojo=1", "congo=2", "baz=3"))],
    "empty_and_comma_only_lines_add_nothing": [
        step(tp(VALID), ts(""), ts(","), ts(" , "), ts("foo=1"), ts(""), trace=KEPT, state=("foo=1",))],
    "32_members_in_4_lines_of_8": [
        step(tp(VALID), *(ts(",".join(BARS[i:i + 8])) for i in range(0, 32, 8)), trace=KEPT,
             state=tuple(BARS[:32]))],
    "33_members_in_2_lines_discarded_whole": [
        step(tp(VALID), ts(",".join(BARS[:16])), ts(",".join(BARS[16:33])), trace=KEPT)],
    "256_character_key_in_the_second_line": [
        step(tp(VALID), ts("foo=1"), ts("k" * 256 + "=v"), trace=KEPT, state=("foo=1", "k" * 256 + "=v")),
        step(tp(VALID), ts("foo=1"), ts("k" * 257 + "=v"), trace=KEPT)],
    "tenant_at_system_keys": [
        step(tp(VALID), ts("foo=1"), ts("1tenant@system=1,t@s=2"), trace=KEPT,
             state=("foo=1", "1tenant@system=1", "t@s=2")),
        step(tp(VALID), ts("9" * 241 + "@" + "s" * 14 + "=1"), trace=KEPT,
             state=("9" * 241 + "@" + "s" * 14 + "=1",)),
        step(tp(VALID), ts("tenant@9system=1,1special=2"), trace=KEPT,
             state=("tenant@9system=1", "1special=2")),  # Level 2: any key character after the first
        step(tp(VALID), ts("foo=1"), ts("-tenant@system=1"), trace=KEPT)],  # a key starts with a letter or digit
    "duplicated_key_across_lines_keeps_the_first_and_the_order": [
        step(tp(VALID), ts("a=1,b=2"), ts("c=3,a=4,d=5"), trace=KEPT, state=("a=1", "b=2", "c=3", "d=5"))],
    "a_value_over_256_characters_discards_the_whole": [
        step(tp(VALID), ts("foo=1"), ts("big=" + "x" * 257), trace=KEPT)],
    "over_512_characters_forwarded_without_the_rightmost": [
        step(tp(VALID), ts(",".join(LONG_MEMBERS[:10])), ts(",".join(LONG_MEMBERS[10:])), trace=KEPT,
             state=tuple(LONG_MEMBERS[:11]))],
    "an_invalid_traceparent_takes_the_tracestate_with_it": [
        step(tp(f"ff-{TRACE}-{PARENT}-01"), ts("foo=1"), trace=NEW),
        step(tp(f"00-{TRACE}-{'0' * 16}-01"), ts("foo=1"), trace=NEW),
        step(tp(f"00-{TRACE}-{PARENT}-01"), tp(f"00-{TRACE[:-1]}1-{PARENT}-01"), ts("foo=1"), trace=NEW)],
    "a_future_version_keeps_the_tracestate": [
        step(tp(f"cc-{TRACE}-{PARENT}-01-future"), ts("foo=1"), ts("bar=2"), trace=KEPT, state=("foo=1", "bar=2"))],
}

CASES = [pytest.param(steps, id=f"w3c_{name.removeprefix('test_')}") for name, steps in W3C.items()] + [
    pytest.param(steps, id=f"issue_{name}") for name, steps in ISSUE.items()]


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().start() as server:
        yield server


@pytest.fixture(scope="module", params=list(RELAYS))
def relay(request: pytest.FixtureRequest, module_receiver: OtlpReceiver) -> Iterator[svc.Service]:
    app, zero_code = RELAYS[request.param]
    with svc.start(app, svc.base_env(module_receiver.endpoint), zero_code=zero_code) as running:
        yield running


@dataclass(frozen=True)
class Relayed:
    """What one request to the relay gave: its response lines, the app's own view, each callback's lines."""

    response: Lines
    seen: dict[str, list[str]]
    callbacks: list[Lines]


def relay_through(relay: svc.Service, recorder: Recorder, lines: Lines, callbacks: int = 1) -> Relayed:
    """Send ``lines`` to the relay's test endpoint (it calls the recorder back ``callbacks`` times)."""
    paths = [f"/{uuid.uuid4().hex}" for _ in range(callbacks)]
    body = json.dumps([{"url": recorder.url(path), "arguments": []} for path in paths]).encode()
    status, response, content = send(relay.port, "/test", lines, body)
    assert status == 200, relay.errors()[-2000:]
    return Relayed(response, json.loads(content), [only(recorder.received.get(path, [])) for path in paths])


def only(found: list[Lines]) -> Lines:
    assert len(found) == 1, f"expected one callback, got {len(found)}"
    return found[0]


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", CASES)
def test_the_relay_forwards_what_the_specification_requires(
    relay: svc.Service, recorder: Recorder, steps: list[Step]
) -> None:
    for number, case in enumerate(steps, 1):
        where = f"request {number}: {case.lines!r}"
        callbacks = relay_through(relay, recorder, case.lines, case.callbacks).callbacks
        sent_ids = {run for _, value in case.lines for run in re.findall(r"[0-9a-f]{32}", value)}
        parents = set()
        for callback in callbacks:
            _, trace_id, parent_id, flags = traceparent_of(callback)
            parents.add(parent_id)
            if case.trace == KEPT:
                assert trace_id == TRACE, where
                assert parent_id != PARENT, where
            elif case.trace == NEW:
                assert trace_id not in sent_ids, where
                assert trace_id != "0" * 32, where
            if case.random_flag:
                assert flags & 0x02, f"{where}: the random flag was not propagated (flags {flags:02x})"
            assert tracestate_of(callback) == case.state, where
        assert len(parents) == len(callbacks), where  # each callback its own client span


def test_the_sender_puts_each_line_on_the_wire(recorder: Recorder) -> None:
    lines = (("TraceState", "foo=1"), ("tracestate", ""), ("tracestate", " bar=2\t"), ("TRACEPARENT", VALID))
    path = f"/{uuid.uuid4().hex}"
    status, _, _ = send(recorder.port, path, lines)
    assert status == 200
    received = only(recorder.received[path])
    # as sent: separate lines, in order, their names' casing kept (http.server drops the OWS after the colon)
    assert [(n, v) for n, v in received if n.lower() in ("tracestate", "traceparent")] == [
        ("TraceState", "foo=1"), ("tracestate", ""), ("tracestate", "bar=2\t"), ("TRACEPARENT", VALID)]


def test_baggage_lines_are_combined(relay: svc.Service, recorder: Recorder) -> None:
    relayed = relay_through(relay, recorder, (tp(VALID), ("baggage", "user=alice,tier=gold"), ("baggage", ""),
                                              ("baggage", "region=eu")))
    [callback] = relayed.callbacks
    members = [m.strip() for line in values(callback, "baggage") for m in line.split(",")]
    assert sorted(members) == ["region=eu", "tier=gold", "user=alice"]
    assert relayed.seen["baggage"] == ["user=alice,tier=gold,region=eu"]  # the app is handed the whole field


def test_the_app_is_handed_each_trace_header_combined_in_one_line(relay: svc.Service, recorder: Recorder) -> None:
    relayed = relay_through(relay, recorder, (ts("foo=1,bar=2"), tp(VALID), ts(""), ts("rojo=1"), ts("baz=3")))
    assert relayed.seen == {"traceparent": [VALID], "tracestate": ["foo=1,bar=2,rojo=1,baz=3"], "baggage": []}
    single = relay_through(relay, recorder, (tp(VALID), ts("foo=1")))
    assert single.seen == {"traceparent": [VALID], "tracestate": ["foo=1"], "baggage": []}


def test_the_correlation_header_takes_its_first_line(relay: svc.Service, recorder: Recorder) -> None:
    first, second = f"first-{uuid.uuid4().hex[:8]}", f"second-{uuid.uuid4().hex[:8]}"
    relayed = relay_through(relay, recorder, (("X-Correlation-ID", first), ("X-Correlation-ID", second)))
    assert values(relayed.response, "x-correlation-id") == [first]
    assert values(relayed.callbacks[0], "x-correlation-id") == [first]
