"""W3C Trace Context Level 2 ``tracestate``: built from the specification's grammar, valid and invalid.

Level 2's key is ``( lcalpha / DIGIT ) 0*255 keychar`` with ``@`` among the key characters, so the
strategies' ``tenant@system`` keys are only one shape of it.
"""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qm_otel.core.correlation import (
    TRACESTATE_MAX,
    TRACESTATE_MEMBERS,
    TraceContextPropagator,
    parse_tracestate,
    truncate_tracestate,
)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LCALPHA = string.ascii_lowercase
KEY_CHARS = LCALPHA + string.digits + "_-*/"
VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")  # no trailing space: see below

simple_key = st.builds(lambda first, rest: first + rest, st.sampled_from(LCALPHA),
                       st.text(KEY_CHARS, max_size=30))
tenant_key = st.builds(lambda t, rest, s, srest: f"{t}{rest}@{s}{srest}", st.sampled_from(LCALPHA + string.digits),
                       st.text(KEY_CHARS, max_size=20), st.sampled_from(LCALPHA), st.text(KEY_CHARS, max_size=13))
value = st.text(VALUE_CHARS, min_size=1, max_size=60).map(lambda v: v.strip() or "v")
members = st.lists(st.tuples(st.one_of(simple_key, tenant_key), value), min_size=1, max_size=32,
                   unique_by=lambda kv: kv[0])


def extract(tracestate: str) -> trace.SpanContext:
    carrier = {"traceparent": PARENT, "tracestate": tracestate}
    return trace.get_current_span(TraceContextPropagator().extract(carrier)).get_span_context()


def inject(context: trace.SpanContext) -> dict[str, str]:
    carrier: dict[str, str] = {}
    TraceContextPropagator().inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(context)))
    return carrier


@given(members)
def test_a_valid_tracestate_is_kept_and_forwarded_within_512_characters(pairs: list[tuple[str, str]]) -> None:
    header = ",".join(f"{k}={v}" for k, v in pairs)
    context = extract(header)
    assert context.is_valid
    assert list(context.trace_state.items()) == pairs
    forwarded = inject(context).get("tracestate", "")
    assert len(forwarded) <= TRACESTATE_MAX
    assert forwarded == truncate_tracestate(header)


@given(members, st.sampled_from(["bad tenant", "upper case", "long key", "bad value", "long value", "empty value"]))
def test_an_invalid_tracestate_is_dropped_whole_and_the_traceparent_kept(
    pairs: list[tuple[str, str]], defect: str
) -> None:
    bad = {
        "bad tenant": "-tenant@system=v",
        "upper case": "Foo=v",
        "long key": "k" + "x" * 256 + "=v",
        "bad value": "foo=bar=baz",
        "long value": "foo=" + "x" * 257,
        "empty value": "foo=",
    }[defect]
    header = ",".join([*(f"{k}={v}" for k, v in pairs), bad])
    context = extract(header)
    assert context.is_valid
    assert format(context.span_id, "016x") == PARENT.split("-")[2]  # the traceparent is kept
    assert len(context.trace_state) == 0
    assert "tracestate" not in inject(context)


@given(members, st.integers(min_value=0, max_value=31), st.text(VALUE_CHARS, min_size=1, max_size=10))
def test_a_duplicated_key_keeps_its_first_member(pairs: list[tuple[str, str]], index: int, again: str) -> None:
    key = pairs[index % len(pairs)][0]
    header = ",".join([*(f"{k}={v}" for k, v in pairs), f"{key}={again.strip() or 'v'}"][-TRACESTATE_MEMBERS:])
    kept = [pair for pair in pairs if header.startswith(f"{pair[0]}=") or f",{pair[0]}=" in header]
    assert list(extract(header).trace_state.items()) == kept


def test_level_2_keys_the_level_1_grammar_refused_are_kept_and_forwarded() -> None:
    keys = ["foo@", "foo@@bar", "foo@bar@baz", "1special", "tenant@9system", "t@" + "v" * 15,
            "t" * 242 + "@v", "t" * 241 + "@" + "v" * 14, "z" * 256]
    for key in keys:
        context = extract(f"foo=1,{key}=1")
        assert list(context.trace_state.items()) == [("foo", "1"), (key, "1")], key
        assert inject(context)["tracestate"] == f"foo=1,{key}=1"
    assert len(extract("foo=1,@foo=1").trace_state) == 0  # a key starts with a letter or a digit


def test_the_lines_of_a_tracestate_are_read_together() -> None:
    assert list(parse_tracestate(["foo=1,bar=2", "", " \t", "rojo=1,congo=2", "baz=3"]).keys()) == [
        "foo", "bar", "rojo", "congo", "baz"]
    thirty_two = [",".join(f"k{n}=v" for n in range(start, start + 8)) for start in range(0, 32, 8)]
    assert len(parse_tracestate(thirty_two)) == TRACESTATE_MEMBERS
    assert len(parse_tracestate([*thirty_two, "k32=v"])) == 0
    assert len(parse_tracestate(["foo=1", "a=" + "v" * 256] * 40)) == 0  # over 8192 characters: not read


def test_no_traceparent_no_tracestate() -> None:
    carrier = {"traceparent": "ff" + PARENT[2:], "tracestate": "foo=1"}
    assert not trace.get_current_span(TraceContextPropagator().extract(carrier)).get_span_context().is_valid


def test_more_than_32_members_is_invalid() -> None:
    header = ",".join(f"k{n}=v" for n in range(33))
    assert len(extract(header).trace_state) == 0


def test_truncation_removes_members_over_128_characters_first_then_the_rightmost() -> None:
    small = [f"k{n}={'v' * 20}" for n in range(10)]  # 10 members of 24 characters
    large = "big=" + "x" * 200
    header = ",".join([small[0], large, *small[1:], "last=" + "y" * 150])  # 610 characters
    assert truncate_tracestate(header) == ",".join([small[0], large, *small[1:]])  # the right-most large one
    two_large = ",".join([small[0], large, *small[1:], "last=" + "y" * 150, "more=" + "z" * 120])
    assert truncate_tracestate(two_large) == ",".join(small[:1] + small[1:] + ["more=" + "z" * 120])
    many = ",".join(f"k{n}={'v' * 40}" for n in range(20))  # 20 members of 44: the right-most go
    assert truncate_tracestate(many) == ",".join(f"k{n}={'v' * 40}" for n in range(11))


@given(st.lists(st.tuples(simple_key, st.text(VALUE_CHARS, min_size=1, max_size=250).map(
    lambda v: v.strip() or "v")), min_size=1, max_size=32, unique_by=lambda kv: kv[0]))
def test_truncation_keeps_order_and_only_drops_small_members_once_no_large_one_is_left(
    pairs: list[tuple[str, str]],
) -> None:
    header_members = [f"{k}={v}" for k, v in pairs]
    kept = truncate_tracestate(",".join(header_members)).split(",") if pairs else []
    kept = [m for m in kept if m]
    assert len(",".join(kept)) <= TRACESTATE_MAX
    iterator = iter(header_members)
    assert all(member in iterator for member in kept)  # a subsequence: the order is kept
    dropped = [m for m in header_members if m not in kept]
    if any(len(m) <= 128 for m in dropped):
        assert all(len(m) <= 128 for m in kept)


def test_the_sdk_propagator_is_what_qm_otel_replaces() -> None:
    assert issubclass(TraceContextPropagator, TraceContextTextMapPropagator)


HEX = "0123456789abcdef"
traceparents = st.one_of(
    st.builds(lambda ws, v, t, s, f, more, tail: f"{ws}{v}-{t}-{s}-{f}{more}{tail}",
              st.sampled_from(["", " ", "\t"]), st.sampled_from(["00", "01", "cc", "ff", "0", "000", "0g", "FF"]),
              st.one_of(st.text(HEX, min_size=32, max_size=32), st.just("0" * 32), st.text(HEX, max_size=33)),
              st.one_of(st.text(HEX, min_size=16, max_size=16), st.just("0" * 16), st.text(HEX, max_size=17)),
              st.sampled_from(["00", "01", "02", "03", "ff", "1", "001", ".0"]),
              st.sampled_from(["", "-", "-future", ".x"]), st.sampled_from(["", " ", "\t "])),
    st.text(max_size=60))


@given(traceparents)
def test_traceparent_is_read_as_the_sdk_reads_it(header: str) -> None:
    carrier = {"traceparent": header}
    ours = trace.get_current_span(TraceContextPropagator().extract(carrier)).get_span_context()
    sdks = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    assert ours == sdks
    assert ours.trace_flags == sdks.trace_flags
