"""Pure ASGI middleware: correlation in and out (outermost, before the server span starts), the request log.

The correlation middleware must wrap the server-span middleware so the span's trace ID can be the
one the incoming correlation ID maps to; :func:`qm_otel.instrument_app` puts it there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.http import ExcludeList

from qm_otel.config import Settings
from qm_otel.conventions import Band, conventions
from qm_otel.correlation import Correlation, accept, activate, deactivate, mark_exception, resolve
from qm_otel.integrations.server import request_headers, request_url, route_template
from qm_otel.logs.pipeline import direct_handler
from qm_otel.redaction import redact_query
from qm_otel.users import UserSlot, close_slot, open_slot, user_of

__all__ = ["UNMATCHED", "CorrelationMiddleware", "RequestLog", "RequestLogMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TRACE_CONTEXT = TraceContextTextMapPropagator()
_request_logger = logging.getLogger("qm_otel.requests")
#: the request log's ``action`` for a request no route matched (a 404, a scanner probe)
UNMATCHED = "unmatched"
_MAX_QUERY = 1024
#: the user fields in the request log (JSON names; the OTLP export uses user.id / user.name)
_USER_FIELDS = {"user.id": "user_id", "user.name": "user_name"}
_WS_INTERNAL_ERROR = 1011
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


#: what goes with a traceparent that cannot be used (tracestate belongs to the parent it names)
_PARENT_HEADERS = frozenset({b"traceparent", b"tracestate"})


def _ambiguous_traceparent(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether there are two ``traceparent`` headers, or one with a comma-joined second value (no one parent)."""
    values = [value for name, value in headers if name.lower() == b"traceparent"]
    return len(values) > 1 or any(b"," in value for value in values)


def _valid_parent_trace_id(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The trace ID of a valid W3C ``traceparent`` among ``headers``, or None."""
    for name, value in headers:
        if name.lower() == b"traceparent":
            carrier = {"traceparent": value.decode("latin-1")}
            context = trace.get_current_span(_TRACE_CONTEXT.extract(carrier)).get_span_context()
            return context.trace_id if context.is_valid else None
    return None


class CorrelationMiddleware:
    """Reads ``X-Correlation-ID`` (then ``X-Request-ID``), decides the trace ID, answers with the ID.

    - a valid ``traceparent`` wins for the trace ID; the correlation header is kept as ``correlation.id``;
    - otherwise the accepted incoming ID maps to the trace ID of the (root) server span;
    - a rejected ID is replaced by a new one and counted, never echoed or logged;
    - ``trust_incoming=False`` (public edges): every request starts a new trace, incoming trace
      headers are dropped, and an accepted incoming ID is only the ``correlation.incoming_id`` attribute.

    Every response, errors included, carries the correlation ID in ``X-Correlation-ID``.
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
        self._header_names = tuple(name.lower().encode("latin-1") for name in header_names)
        self._response_header = response_header.lower().encode("latin-1")
        self._trust_incoming = trust_incoming

    def _incoming_id(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
        found = {name.lower(): value for name, value in headers if name.lower() in self._header_names}
        for name in self._header_names:
            if name in found:
                return found[name]
        return None

    def _correlate(self, scope: Scope) -> Correlation:
        headers: Sequence[tuple[bytes, bytes]] = scope.get("headers") or ()
        raw = self._incoming_id(headers)
        if not self._trust_incoming:
            scope["headers"] = [(n, v) for n, v in headers if n.lower() not in _TRACE_HEADERS]
            active = resolve(None, "http")
            active.untrusted_incoming_id = accept(raw, "http")
            return active
        if _ambiguous_traceparent(headers):  # W3C Trace Context Level 2: ignore both, start a new trace
            scope["headers"] = headers = [(n, v) for n, v in headers if n.lower() not in _PARENT_HEADERS]
        parent_trace_id = _valid_parent_trace_id(headers)
        if parent_trace_id is None:
            return resolve(raw, "http")
        accepted = accept(raw, "http")
        # the server span continues the caller's trace: nothing pending for a root span
        return Correlation(accepted or format(parent_trace_id, "032x"), parent_trace_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Correlate one HTTP or WebSocket connection; other scopes pass straight through."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        active = self._correlate(scope)
        header = (self._response_header, active.id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            # a WebSocket's accept (and a denial's response) carries the header as a response does
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                others = [(n, v) for n, v in message.get("headers", ()) if n.lower() != self._response_header]
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


class RequestLog:
    """Writes the request-log record: method, route template, status code, duration, band, client address.

    WARNING above the conventions' slow-request threshold (2 s), ERROR for 5xx. The record is the one
    ``event("API", ...)`` would write, made directly (no caller lookup, no name checks: this runs for
    every request). No header and no query string is logged.
    """

    def __init__(
        self, *, slow_ms: float = 2000.0, band: Band | None = None, sensitive: Sequence[str] | None = None
    ) -> None:
        self._slow_ms = slow_ms
        self._band = band or conventions().bands["response_time"]
        #: whose values are replaced in the logged query (default: the default ``sensitive_fields``)
        self._sensitive = tuple(Settings().sensitive_fields if sensitive is None else sensitive)

    def _context(self, scope: Scope, user: Mapping[str, str] | None, fields: dict[str, Any]) -> None:
        """The query (sensitive values replaced, capped) and the user, when there are any."""
        raw = scope.get("query_string") or b""
        if raw:
            query = redact_query(raw.decode("latin-1"), self._sensitive)
            fields["query"] = query if len(query) <= _MAX_QUERY else query[: _MAX_QUERY - 1] + "…"
        for key, value in (user or {}).items():
            fields[_USER_FIELDS.get(key, key)] = value

    def __call__(
        self, scope: Scope, status_code: int, duration_ms: float, route: str | None,
        user: Mapping[str, str] | None = None,
    ) -> None:
        """Write the record for a request that ended with ``status_code`` after ``duration_ms``."""
        failed = status_code >= 500
        level = logging.ERROR if failed else logging.WARNING if duration_ms > self._slow_ms else logging.INFO
        if not _request_logger.isEnabledFor(level):
            return
        method = scope.get("method", "?")
        fields: dict[str, Any] = {
            "band": self._band.band_of(duration_ms),
            "http_method": method,
            "http_status_code": status_code,
        }
        # grouped and labelled (Loki, dashboards): the route template, never the raw path, whose values
        # are unbounded (every scanner probe would be a new one); the path is in url_path
        message = f"{method} {route or scope.get('path', '')} {status_code} {duration_ms:.1f}ms"
        self._write(scope, level, message, fields, action=f"{method} {route or UNMATCHED}", event="http_request",
                    failed=failed, duration_ms=duration_ms, route=route, user=user)

    def websocket(
        self, scope: Scope, close_code: int | None, duration_ms: float, route: str | None,
        user: Mapping[str, str] | None = None,
    ) -> None:
        """Write the record for a WebSocket connection that closed with ``close_code`` after ``duration_ms``."""
        failed = close_code == _WS_INTERNAL_ERROR
        level = logging.ERROR if failed else logging.INFO
        if not _request_logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"websocket_close_code": close_code}
        shown = close_code if close_code is not None else "-"
        message = f"WS {route or scope.get('path', '')} closed {shown} {duration_ms:.1f}ms"
        self._write(scope, level, message, fields, action=f"WS {route or UNMATCHED}", event="websocket_connection",
                    failed=failed, duration_ms=duration_ms, route=route, user=user)

    def _write(
        self, scope: Scope, level: int, message: str, fields: dict[str, Any], *, action: str, event: str,
        failed: bool, duration_ms: float, route: str | None, user: Mapping[str, str] | None,
    ) -> None:
        """The fields every request-log record has, then the record (made directly: no caller lookup)."""
        client = scope.get("client")
        fields.update({
            "url_path": scope.get("path", ""),
            "client_address": f"{client[0]}:{client[1]}" if client else None,
            "component": "API",
            "action": action,
            "status": "FAILURE" if failed else "SUCCESS",
            "event": event,
            "duration_ms": round(duration_ms, 3),
        })
        if route:
            fields["http_route"] = route
        self._context(scope, user, fields)
        handler = direct_handler(_request_logger)
        if handler is not None:  # nothing but qm-otel's handler would see it: the line and OTLP record at once
            handler.write_fields(_request_logger.name, levelno=level, message=message, fields=fields,
                                 created=time.time())
            return
        _request_logger.handle(_request_logger.makeRecord(
            _request_logger.name, level, __file__, 0, message, (), None, "request_log", fields))


class RequestLogMiddleware:
    """The request log on its own, for an app whose server span comes from elsewhere.

    Written when the response ends, from inside the server span (the ``send`` path runs in its
    context), so it carries the request's trace, span and correlation IDs. The URLs ``excluded``
    (health endpoints) are skipped. qm-otel's own stack writes the same record from
    :class:`~qm_otel.integrations.server.ServerTelemetryMiddleware`.
    """

    def __init__(
        self, app: ASGIApp, *, excluded: Sequence[str] = (), slow_ms: float = 2000.0, band: Band | None = None,
        sensitive: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self._sensitive = tuple(Settings().sensitive_fields if sensitive is None else sensitive)
        # the exclude list and the URL it is matched against are the OTel middleware's own, so what
        # is not traced is exactly what is not logged
        self._excluded = ExcludeList(list(excluded))
        self._log = RequestLog(slow_ms=slow_ms, band=band, sensitive=sensitive)

    def _skipped(self, scope: Scope) -> bool:
        return self._excluded.url_disabled(request_url(scope, request_headers(scope)))

    def _write(self, scope: Scope, status_code: int, started: float, slot: UserSlot) -> None:
        self._log(scope, status_code, (time.perf_counter() - started) * 1000.0, route_template(scope),
                  user_of(slot, scope, self._sensitive))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Log the request once its response has ended (or failed)."""
        if scope["type"] != "http" or self._skipped(scope):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500
        written = False
        slot, token = open_slot()

        async def send_and_log(message: Message) -> None:
            nonlocal status_code, written
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not written:
                written = True
                self._write(scope, status_code, started, slot)

        try:
            await self.app(scope, receive, send_and_log)
        finally:
            if not written:  # no complete response: the client went away or the app failed first
                self._write(scope, status_code, started, slot)
            close_slot(token)
