"""Correlation IDs become trace IDs.

The ID a client or an upstream service sends is the ID a person searches in Tempo and Loki:

>>> trace_id_for("4bf92f3577b34da6a3ce929d0e0e4736") == 0x4BF92F3577B34DA6A3CE929D0E0E4736
True
>>> trace_id_for("6f9619ff-8b86-d011-b42d-00cf4fc964ff") == 0x6F9619FF8B86D011B42D00CF4FC964FF
True
>>> format(trace_id_for("job-42"), "032x")  # SHA-256 of the UTF-8 bytes, first 16 bytes
'5359ae12ca11e5d628161c38de88522b'

Rules: an ID of 32 hex digits or a UUID (dashes optional) IS the 128-bit trace ID (all zeros is
rejected); any other accepted ID maps to the first 16 bytes of its SHA-256; accepted IDs are 1-128
characters of ``[A-Za-z0-9._:-]``; anything else is rejected, replaced by a new ID, counted, and
never echoed, logged or put on a span.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import Span, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from qm_otel.core import instruments
from qm_otel.core.sdk_internals import checked_trace_state

__all__ = [
    "CORRELATION_ATTRIBUTE",
    "UNTRUSTED_ATTRIBUTE",
    "Correlation",
    "CorrelationIdGenerator",
    "CorrelationPropagator",
    "CorrelationSpanProcessor",
    "TraceContextPropagator",
    "correlation",
    "correlation_id",
    "exception_context",
    "exception_correlation_id",
    "install_outbound_propagator",
    "mark_exception",
    "parse",
    "parse_tracestate",
    "trace_id_for",
    "truncate_tracestate",
]

#: the span attribute that keeps the original ID (the log field is ``correlation_id``)
CORRELATION_ATTRIBUTE = "correlation.id"
#: the span attribute for an incoming ID that was not trusted (``trust_incoming=False``)
UNTRUSTED_ATTRIBUTE = "correlation.incoming_id"
MAX_LENGTH = 128
_ACCEPTED = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_random = RandomIdGenerator()


def rejection_reason(value: str | bytes | None) -> str | None:
    """Why ``value`` is not an acceptable correlation ID, or None if it is acceptable.

    The reasons are ``empty``, ``too_long``, ``characters`` and ``zero``; never the value itself.
    """
    if value is None or len(value) == 0:
        return "empty"
    if len(value) > MAX_LENGTH:
        return "too_long"
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return "characters"
    if not _ACCEPTED.fullmatch(value):
        return "characters"
    if _is_id_shaped(value) and int(value.replace("-", ""), 16) == 0:
        return "zero"
    return None


def _is_id_shaped(value: str) -> bool:
    return bool(_HEX32.fullmatch(value) or _UUID.fullmatch(value))


def parse(value: str | bytes | None) -> str | None:
    """The accepted correlation ID in ``value``, or None if it must be rejected."""
    if rejection_reason(value) is not None:
        return None
    return value.decode("ascii") if isinstance(value, bytes) else value


def trace_id_for(correlation_id: str) -> int:
    """The 128-bit trace ID an accepted correlation ID maps to (see the module docstring)."""
    if _is_id_shaped(correlation_id):
        return int(correlation_id.replace("-", ""), 16)
    return int.from_bytes(hashlib.sha256(correlation_id.encode("utf-8")).digest()[:16], "big")


def new_correlation_id() -> tuple[str, int]:
    """A fresh random trace ID and its 32-hex form, the correlation ID of a request that sent none."""
    trace_id = _random.generate_trace_id()
    return format(trace_id, "032x"), trace_id


@dataclass
class Correlation:
    """The correlation of the work in progress: its ID and the trace ID the next root span takes."""

    id: str
    trace_id: int
    #: the trace ID is handed to the first root span only (then None)
    pending_trace_id: int | None = field(default=None, repr=False)
    #: an accepted incoming ID that was not trusted (public edge): kept as an attribute only
    untrusted_incoming_id: str | None = None


_CURRENT: contextvars.ContextVar[Correlation | None] = contextvars.ContextVar("qm_otel_correlation", default=None)


def correlation_id() -> str | None:
    """The correlation ID of the current request or :func:`correlation` block, or None."""
    active = _CURRENT.get()
    return active.id if active is not None else None


def activate(active: Correlation) -> contextvars.Token[Correlation | None]:
    """Make ``active`` current; reset with :func:`deactivate` and the token, in a ``finally``."""
    return _CURRENT.set(active)


def deactivate(token: contextvars.Token[Correlation | None]) -> None:
    """Undo :func:`activate`."""
    _CURRENT.reset(token)


class CorrelationIdGenerator(RandomIdGenerator):
    """Hands the correlation's trace ID to the root span started for it; random IDs otherwise.

    The SDK calls ``generate_trace_id()`` only for root spans, so a request's server span (a
    true root, no invented parent) gets the trace ID its correlation ID maps to.
    """

    def generate_trace_id(self) -> int:
        """The pending correlation trace ID (once), else a random one."""
        active = _CURRENT.get()
        if active is not None and active.pending_trace_id is not None:
            trace_id, active.pending_trace_id = active.pending_trace_id, None
            return trace_id
        return super().generate_trace_id()


class CorrelationSpanProcessor(SpanProcessor):
    """Puts ``correlation.id`` on every span started while a correlation is active."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Tag the span; cheap when no correlation is active (one context-variable read)."""
        del parent_context
        active = _CURRENT.get()
        if active is None:
            return
        span.set_attribute(CORRELATION_ATTRIBUTE, active.id)
        if active.untrusted_incoming_id is not None:
            span.set_attribute(UNTRUSTED_ATTRIBUTE, active.untrusted_incoming_id)


class CorrelationPropagator(TextMapPropagator):
    """Outbound: adds ``X-Correlation-ID`` beside ``traceparent`` when a correlation is active.

    Inbound IDs are read by the ASGI middleware, which must validate them before any span starts.
    """

    header = "X-Correlation-ID"

    def extract(
        self, carrier: Any, context: otel_context.Context | None = None, getter: Getter[Any] = default_getter
    ) -> otel_context.Context:
        """Nothing to extract here (see the class docstring)."""
        del carrier, getter
        return context if context is not None else otel_context.get_current()

    def inject(
        self, carrier: Any, context: otel_context.Context | None = None, setter: Setter[Any] = default_setter
    ) -> None:
        """Write the active correlation ID into ``carrier``."""
        del context
        active = _CURRENT.get()
        if active is not None:
            setter.set(carrier, self.header, active.id)

    @property
    def fields(self) -> set[str]:
        """The header this propagator writes."""
        return {self.header}


#: a combined ``tracestate`` longer than this is shortened before it is forwarded (W3C Trace Context)
TRACESTATE_MAX = 512
_TRACESTATE_LARGE_MEMBER = 128


def truncate_tracestate(header: str) -> str:
    """``header`` cut to at most 512 characters by the W3C Trace Context rule.

    List-members larger than 128 characters go first (the right-most of them first), then the
    right-most of the others, until the rest fits; the order of what remains is kept.
    """
    if len(header) <= TRACESTATE_MAX:
        return header
    members = [member.strip(" \t") for member in header.split(",") if member.strip(" \t")]

    def size() -> int:
        return len(",".join(members))

    for index in range(len(members) - 1, -1, -1):
        if size() <= TRACESTATE_MAX:
            break
        if len(members[index]) > _TRACESTATE_LARGE_MEMBER:
            del members[index]
    while members and size() > TRACESTATE_MAX:
        members.pop()
    return ",".join(members)


class _ShortTracestate(Setter[Any]):
    """Hands every header through, a ``tracestate`` shortened by :func:`truncate_tracestate`."""

    def __init__(self, setter: Setter[Any]) -> None:
        self._setter = setter

    def set(self, carrier: Any, key: str, value: str) -> None:
        """Set ``key`` on ``carrier`` (an empty tracestate is left out)."""
        if key == "tracestate":
            value = truncate_tracestate(value)
            if not value:
                return
        self._setter.set(carrier, key, value)


#: W3C Trace Context Level 2's list-member: ``key = ( lcalpha / DIGIT ) 0*255 keychar`` (``keychar`` is
#: lcalpha, DIGIT, ``_ - * / @``: a ``tenant@system`` key is one key), ``=``, and a value of 1-256
#: printable characters but ``,`` and ``=``, not ending in a space
_TRACESTATE_MEMBER = re.compile(
    r"([a-z0-9][_0-9a-z\-*/@]{0,255})=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])")
#: at most this many list-members in a ``tracestate``
TRACESTATE_MEMBERS = 32
#: a combined ``tracestate`` longer than this is not read at all (the SDK's bound)
_TRACESTATE_READ_MAX = 8192


def parse_tracestate(lines: Sequence[str]) -> TraceState:
    """The ``tracestate`` in ``lines`` (the header's field lines, or their RFC 9110 combination), by Level 2's rules.

    Empty and whitespace-only members (an empty line) add nothing; members keep their order. The
    whole header is discarded (an empty ``TraceState``) for a member that breaks the grammar, more
    than 32 members, or more than 8192 characters. A duplicated key keeps its first (left-most)
    member and drops the later ones: Level 2 lets a vendor "discard duplicate keys that were not
    generated by them", and the W3C test suite accepts keeping either or both, where the SDK
    discards the whole header. The left-most is kept as it is the latest position of a vendor
    that moved its key to the front, and a ``TraceState`` holds one value per key.

    >>> list(parse_tracestate(["foo=1,bar=2", "", "rojo=1,foo=3"]).items())
    [('foo', '1'), ('bar', '2'), ('rojo', '1')]
    """
    if sum(len(line) + 1 for line in lines) > _TRACESTATE_READ_MAX + 1:
        return TraceState()
    members: dict[str, str] = {}
    count = 0
    for line in lines:
        for item in line.split(","):
            member = item.strip(" \t")
            if not member:
                continue
            match = _TRACESTATE_MEMBER.fullmatch(member)
            count += 1
            if match is None or count > TRACESTATE_MEMBERS:
                return TraceState()
            members.setdefault(match[1], match[2])
    return checked_trace_state(members) if members else TraceState()


#: ``traceparent``: version, trace ID, parent ID, flags, and what a later version may add (the SDK's pattern)
_TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$")


class TraceContextPropagator(TraceContextTextMapPropagator):
    """W3C Trace Context: ``tracestate`` read by Level 2's rules, at most 512 characters of it forwarded.

    ``traceparent`` is read as the SDK reads it (the same pattern and checks: an all-zero ID, version
    ``ff``, or a version ``00`` with more fields is no parent); ``tracestate`` only with a valid
    ``traceparent``, by :func:`parse_tracestate` (Level 2's key grammar, a duplicated key's first member
    kept). A ``tracestate`` that must be discarded leaves the valid ``traceparent`` in force.
    """

    def extract(
        self, carrier: Any, context: otel_context.Context | None = None, getter: Getter[Any] = default_getter
    ) -> otel_context.Context:
        """The remote parent in ``carrier``'s ``traceparent`` and ``tracestate``, set in ``context``."""
        if context is None:
            context = otel_context.Context()
        header = getter.get(carrier, "traceparent")
        match = _TRACEPARENT.search(header[0]) if header else None
        if match is None:
            return context
        version, trace_id, span_id, flags, more = match.groups()
        if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff" or (version == "00" and more):
            return context
        lines = getter.get(carrier, "tracestate")
        parent = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                                   trace_flags=trace.TraceFlags(int(flags, 16)),
                                   trace_state=parse_tracestate(lines) if lines else None)
        return trace.set_span_in_context(trace.NonRecordingSpan(parent), context)

    def inject(
        self, carrier: Any, context: otel_context.Context | None = None, setter: Setter[Any] = default_setter
    ) -> None:
        """The SDK's injection through a setter that shortens ``tracestate``."""
        super().inject(carrier, context, _ShortTracestate(setter))


def install_outbound_propagator() -> None:
    """Outgoing requests carry ``X-Correlation-ID`` beside whatever ``OTEL_PROPAGATORS`` chose (once).

    The SDK's W3C Trace Context propagator among them is replaced by :class:`TraceContextPropagator`.
    """
    current = propagate.get_global_textmap()
    members = getattr(current, "_propagators", [current])
    if any(isinstance(member, CorrelationPropagator) for member in members):
        return
    members = [TraceContextPropagator() if type(member) is TraceContextTextMapPropagator else member
               for member in members]
    propagate.set_global_textmap(CompositePropagator([*members, CorrelationPropagator()]))


def count_rejection(reason: str, source: str) -> None:
    """Count one rejected ID (never the value itself)."""
    instruments.current().correlation_rejected.add(1, {"reason": reason, "source": source})


def accept(raw: str | bytes | None, source: str) -> str | None:
    """The accepted ID in an incoming value; a present but unacceptable value is counted and dropped."""
    if raw is None:
        return None
    reason = rejection_reason(raw)
    if reason is not None:
        count_rejection(reason, source)
        return None
    return raw.decode("ascii") if isinstance(raw, bytes) else raw


def resolve(raw: str | bytes | None, source: str) -> Correlation:
    """The correlation for an incoming value: accepted and mapped, or replaced (and counted)."""
    accepted = accept(raw, source)
    if accepted is not None:
        trace_id = trace_id_for(accepted)
        return Correlation(accepted, trace_id, trace_id)
    new_id, trace_id = new_correlation_id()
    return Correlation(new_id, trace_id, trace_id)


@contextlib.contextmanager
def correlation(correlation_id: str | None = None, name: str = "job") -> Iterator[Correlation]:
    """Run non-HTTP work (a worker, a scheduled job, a CLI script) under a correlation ID.

    Starts a root span called ``name`` whose trace ID is the one ``correlation_id`` maps to;
    log records written inside carry the same ``trace_id``, ``span_id`` and ``correlation_id``.
    A missing ID gets a new one; an unacceptable one is replaced and counted, like an HTTP header.

    >>> with correlation("job-42", name="nightly-report") as active:   # doctest: +SKIP
    ...     logging.info("started")  # trace_id 5359ae12..., correlation_id job-42
    """
    active = resolve(correlation_id, "code")
    token = activate(active)
    try:
        tracer = trace.get_tracer("qm_otel.correlation")
        # a new root: an enclosing span must not make this a child of another trace
        with tracer.start_as_current_span(name, context=otel_context.Context()):
            yield active
    finally:
        deactivate(token)


# --- an unhandled exception carries its request's IDs out of the request ------------------------

_EXC_CONTEXT = "_qm_otel_context"
_EXC_CORRELATION = "_qm_otel_correlation_id"


def mark_exception(exc: BaseException, context: otel_context.Context | None = None,
                   correlation: str | None = None) -> None:
    """Stamp ``exc`` with the request's trace context and correlation ID (the innermost stamp wins).

    The server's "Exception in ASGI application" record is written after the request's context is
    gone; the log pipeline reads these stamps from the record's exception, so that record still
    carries the request's ``trace_id``, ``span_id`` and ``correlation_id``.
    """
    # attributes on the exception itself, not a WeakKeyDictionary: exceptions take no weak reference
    # (``weakref.ref(ValueError())`` is a TypeError), and a dictionary that held them would keep each
    # one, its traceback and its frames alive
    with contextlib.suppress(AttributeError, TypeError):  # an exception type without a __dict__
        if context is not None and not hasattr(exc, _EXC_CONTEXT):
            setattr(exc, _EXC_CONTEXT, context)
        if correlation is not None and not hasattr(exc, _EXC_CORRELATION):
            setattr(exc, _EXC_CORRELATION, correlation)


def exception_context(exc: BaseException | None) -> otel_context.Context | None:
    """The trace context stamped on ``exc`` by :func:`mark_exception`, if any."""
    value = getattr(exc, _EXC_CONTEXT, None)
    return value if isinstance(value, otel_context.Context) else None


def exception_correlation_id(exc: BaseException | None) -> str | None:
    """The correlation ID stamped on ``exc`` by :func:`mark_exception`, if any."""
    value = getattr(exc, _EXC_CORRELATION, None)
    return value if isinstance(value, str) else None
