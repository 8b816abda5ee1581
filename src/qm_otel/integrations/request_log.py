"""The request log: one record per request (method, route template, status, duration, band, client).

Written by :class:`~qm_otel.integrations.server.ServerTelemetryMiddleware` when the response ends,
or, for an app whose server span comes from elsewhere, by :class:`RequestLogMiddleware`. The record
goes out once, directly (its stdout line and OTLP record from its fields, no stdlib ``LogRecord``),
unless a handler or filter of the user's would see it: then through ``logging``
(:func:`qm_otel.logs.pipeline.direct_handler`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from qm_otel.core.config import Settings
from qm_otel.core.conventions import Band, conventions
from qm_otel.integrations.scope import (
    ASGIApp,
    Exclusions,
    Message,
    Receive,
    Scope,
    Send,
    route_template,
    view_of,
)
from qm_otel.logs.pipeline import direct_handler
from qm_otel.runtime.users import UserSlot, close_slot, open_slot, user_of

__all__ = ["UNMATCHED", "RequestLog", "RequestLogMiddleware"]

_request_logger = logging.getLogger("qm_otel.requests")
#: the request log's ``action`` for a request no route matched (a 404, a scanner probe)
UNMATCHED = "unmatched"
_MAX_QUERY = 1024
#: the user fields in the request log (JSON names; the OTLP export uses user.id / user.name)
_USER_FIELDS = {"user.id": "user_id", "user.name": "user_name"}
_WS_INTERNAL_ERROR = 1011


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
        if scope.get("query_string"):
            query = view_of(scope).query(self._sensitive)
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
        self._excluded = Exclusions(excluded)
        self._log = RequestLog(slow_ms=slow_ms, band=band, sensitive=sensitive)

    def _skipped(self, scope: Scope) -> bool:
        return self._excluded.excluded(scope, view_of(scope))

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
