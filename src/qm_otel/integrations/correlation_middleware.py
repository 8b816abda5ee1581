"""The correlation middleware: the incoming correlation ID decides the trace ID, the response carries the ID.

It must wrap the server-span middleware so the span's trace ID can be the one the incoming
correlation ID maps to; :func:`qm_otel.instrument_app` puts it there. It makes the request's
:class:`~qm_otel.integrations.scope.RequestView` (headers decoded once, the parent context extracted
once), which the server span and the request log then read.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace

from qm_otel.core.correlation import Correlation, accept, activate, deactivate, mark_exception, resolve
from qm_otel.integrations.scope import SCOPE_KEY, ASGIApp, Message, Receive, RequestView, Scope, Send, view_of

__all__ = ["CorrelationMiddleware"]

#: the trace headers an untrusted edge drops
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
_TRACE_NAMES = frozenset(name.decode("latin-1") for name in _TRACE_HEADERS)
#: what goes with a traceparent that cannot be used (tracestate belongs to the parent it names)
_PARENT_HEADERS = frozenset({b"traceparent", b"tracestate"})


def _without(scope: Scope, names: frozenset[bytes]) -> None:
    """Drop the ``names`` headers from the scope (before its view is made)."""
    scope["headers"] = [(n, v) for n, v in scope.get("headers") or () if n.lower() not in names]


def _combined(scope: Scope, view: RequestView, names: frozenset[bytes]) -> None:
    """The ``names`` headers sent in several lines become one line each, the view's combination (RFC 9110 §5.3).

    Whatever reads the scope after this middleware (a contrib ASGI middleware extracting with its
    own getter, the app's ``request.headers``, which give a field's first line) sees the whole field.
    """
    lines: list[tuple[bytes, bytes]] = []
    done: set[bytes] = set()
    for name, value in scope.get("headers") or ():
        lower = name.lower()
        if lower not in names or lower.decode("latin-1") not in view.repeated:
            lines.append((name, value))
        elif lower not in done:  # the combined line where the first one was
            done.add(lower)
            lines.append((lower, view.headers[lower.decode("latin-1")].encode("latin-1")))
    scope["headers"] = lines


class CorrelationMiddleware:
    """Reads ``X-Correlation-ID`` (then ``X-Request-ID``), decides the trace ID, answers with the ID.

    - a valid parent trace context (``traceparent``, or what the configured propagator reads) wins
      for the trace ID; the correlation header is kept as ``correlation.id``;
    - otherwise the accepted incoming ID maps to the trace ID of the (root) server span;
    - a rejected ID is replaced by a new one and counted, never echoed or logged;
    - ``trust_incoming=False`` (public edges): every request starts a new trace, incoming trace
      headers are dropped, and an accepted incoming ID is only the ``correlation.incoming_id`` attribute.

    Every response, errors included, carries the correlation ID in ``X-Correlation-ID``; the
    correlation header's first line is the one read. A ``traceparent``, ``tracestate`` or ``baggage``
    sent in several lines reaches the rest of the stack and the app as one line, the lines combined
    (RFC 9110 §5.3); a request with one line each is handed on untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header_names: Sequence[str] = ("X-Correlation-ID", "X-Request-ID"),
        response_header: str = "X-Correlation-ID",
        trust_incoming: bool = True,
    ) -> None:
        self.app = app
        self._header_names = tuple(name.lower() for name in header_names)
        self._response_header = response_header.lower().encode("latin-1")
        self._trust_incoming = trust_incoming

    def _incoming_id(self, view: RequestView) -> str | None:
        """The first line of the first correlation header present."""
        for name in self._header_names:
            value = view.first.get(name)
            if value is not None:
                return value
        return None

    def _correlate(self, scope: Scope) -> Correlation:
        if not self._trust_incoming:
            _without(scope, _TRACE_HEADERS)
            active = resolve(None, "http")
            active.untrusted_incoming_id = accept(self._incoming_id(view_of(scope)), "http")
            return active
        view = view_of(scope)
        if view.repeated and not view.repeated.isdisjoint(_TRACE_NAMES):
            _combined(scope, view, _TRACE_HEADERS)
        if "," in view.headers.get("traceparent", ""):  # W3C Trace Context Level 2: no one parent, a new trace
            _without(scope, _PARENT_HEADERS)
            del scope[SCOPE_KEY]
            view = view_of(scope)
        raw = self._incoming_id(view)
        parent = trace.get_current_span(view.parent()).get_span_context()
        if not parent.is_valid:
            return resolve(raw, "http")
        accepted = accept(raw, "http")
        # the server span continues the caller's trace: nothing pending for a root span
        return Correlation(accepted or format(parent.trace_id, "032x"), parent.trace_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Correlate one HTTP or WebSocket connection; other scopes pass straight through."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope.pop(SCOPE_KEY, None)  # a view made for another app's scope is not this one's
        active = self._correlate(scope)
        header = (self._response_header, active.id.encode("ascii"))
        response_header = self._response_header

        async def send_with_id(message: Message) -> None:
            # a WebSocket's accept (and a denial's response) carries the header as a response does
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                others = [(n, v) for n, v in message.get("headers", ()) if n.lower() != response_header]
                message["headers"] = [*others, header]
            await send(message)

        token = activate(active)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            mark_exception(exc, correlation=active.id)
            raise
        finally:
            deactivate(token)
