"""The server span, the HTTP server metrics and the request log of every request, in one middleware.

It replaces the contrib ASGI/FastAPI instrumentation's middleware on qm-otel's request path, which
matched the request against every route before the app routed it again and wrapped ``send`` once
more per layer (docs/decisions/server-middleware.md). This middleware keeps the contrib
semantics under the stable HTTP conventions — the same span (name ``METHOD /route/{template}``,
kind, attributes, status, exception event, parent from the global propagator), the same
instruments (``http.server.request.duration`` with its buckets, ``http.server.active_requests``,
request and response body sizes) with the same attributes — and a test compares the two.
Differences: the scope is ``qm_otel``; ``server.address`` is the host alone, as the conventions
define it (contrib writes ``host:port``); the route template is read once the app has routed the
request (``scope["route"]``, or FastAPI's effective route context for nested routers).

The span ends and the request-log record is written when the response's last body message has
been sent, as contrib ends its span; the duration is recorded when the app returns.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import Token
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.semconv._incubating.metrics.http_metrics import (
    HTTP_SERVER_ACTIVE_REQUESTS,
    create_http_server_request_body_size,
    create_http_server_response_body_size,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    SanitizeValue,
    detect_synthetic_user_agent,
    get_custom_headers,
    normalise_request_header_name,
    normalise_response_header_name,
    normalize_user_agent,
    sanitize_method,
)

from qm_otel._version import __version__
from qm_otel.core.correlation import mark_exception
from qm_otel.integrations.scope import (
    ASGIApp,
    Exclusions,
    Message,
    Receive,
    RequestView,
    Scope,
    Send,
    route_template,
    view_of,
)
from qm_otel.runtime import event_loop
from qm_otel.runtime.users import UserSlot, close_slot, open_slot, user_of
from qm_otel.signals.histograms import fast_histogram

__all__ = [
    "DURATION_BUCKETS",
    "RequestLogWriter",
    "ServerTelemetryMiddleware",
    "route_template",
]


class RequestLogWriter(Protocol):
    """Writes the request-log record of an HTTP request, and of a WebSocket connection."""

    def __call__(
        self, scope: Scope, status_code: int, duration_ms: float, route: str | None,
        user: Mapping[str, str] | None = None,
    ) -> None:
        """The record of an HTTP request."""

    def websocket(
        self, scope: Scope, close_code: int | None, duration_ms: float, route: str | None,
        user: Mapping[str, str] | None = None,
    ) -> None:
        """The record of a WebSocket connection, when it has closed."""


#: the stable HTTP conventions' schema, as the contrib instrumentation declares it
SCHEMA_URL = "https://opentelemetry.io/schemas/1.21.0"
#: the advisory buckets of ``http.server.request.duration`` (seconds): the semantic conventions' edges
#: plus 0.2 and 2, the response-time error edge and the slow-request threshold of qm-otel's
#: conventions, so the dashboards' band panels and the slow-request alert count exactly
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0)
_MAX_USER_AGENTS = 1024
_MAX_METHODS = 64
_WS_INTERNAL_ERROR = 1011  # the close code of a WebSocket whose handler raised


def _server_attributes(scope: Scope, headers: dict[str, str], attributes: dict[str, Any]) -> None:
    """``server.address`` (the Host header's host, else the socket's) and ``server.port`` (the socket's)."""
    server = scope.get("server")
    host = headers.get("host")
    if host:
        attributes["server.address"] = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    elif server:
        attributes["server.address"] = server[0]
    if server and server[1]:
        attributes["server.port"] = server[1]


class _ActiveRequests:
    """``http.server.active_requests``, observed from in-process counts: one tracker per meter provider.

    The contrib instrumentation adds +1 and -1 to a synchronous up-down counter for every request,
    two measurements through the SDK's aggregation each time; the observed counts give the same
    data point (the number of requests in flight, by method and scheme) for a dictionary update.
    """

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        meter.create_observable_up_down_counter(
            HTTP_SERVER_ACTIVE_REQUESTS, callbacks=[self._observe], unit="{request}",
            description="Number of active HTTP server requests.")

    @classmethod
    def of(cls, provider: MeterProvider, meter: Meter) -> _ActiveRequests:
        """The provider's tracker, made with its instrument the first time."""
        tracker = _TRACKERS.get(provider)
        if tracker is None:
            tracker = _TRACKERS[provider] = cls(meter)
        return tracker

    def change(self, key: tuple[str, str], delta: int) -> None:
        """One request more (``delta=1``) or fewer (``-1``) for this method and scheme."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + delta

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        del options
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(n, {"http.request.method": method, "url.scheme": scheme}) for (method, scheme), n in counts]


#: each meter provider's tracker (weak: a provider that is gone takes its tracker along)
_TRACKERS: weakref.WeakKeyDictionary[MeterProvider, _ActiveRequests] = weakref.WeakKeyDictionary()


class _UserAgents:
    """``user_agent.original`` and ``user_agent.synthetic.type`` per distinct header value (bounded)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str | None, str | None]] = {}

    def attributes(self, raw: str) -> tuple[str | None, str | None]:
        known = self._known.get(raw)
        if known is None:
            original = normalize_user_agent(raw)
            known = (original or None, detect_synthetic_user_agent(original) if original else None)
            if len(self._known) >= _MAX_USER_AGENTS:
                self._known.clear()
            self._known[raw] = known
        return known


class ServerTelemetryMiddleware:
    """One server span, the HTTP server metrics and (optionally) the request-log record per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        excluded: Sequence[str] = (),
        sensitive_fields: Sequence[str] = (),
        request_log: RequestLogWriter | None = None,
    ) -> None:
        self.app = app
        self._tracer = tracer_provider.get_tracer("qm_otel", __version__, schema_url=SCHEMA_URL)
        meter = meter_provider.get_meter("qm_otel", __version__, schema_url=SCHEMA_URL)
        # aggregated by qm-otel's fast path where it gives the SDK's output exactly (signals.histograms)
        self._duration = fast_histogram(meter_provider, meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS))
        self._active = _ActiveRequests.of(meter_provider, meter)
        self._request_size = fast_histogram(meter_provider, create_http_server_request_body_size(meter))
        self._response_size = fast_histogram(meter_provider, create_http_server_response_body_size(meter))
        self._excluded = Exclusions(excluded)
        self._words = tuple(sensitive_fields)
        self._request_log = request_log
        self._user_agents = _UserAgents()
        self._methods: dict[str, str] = {}
        # header values captured on the span, opt-in, as the contrib instrumentation reads them
        self._capture_request = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)
        self._capture_response = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE)
        self._sanitize = SanitizeValue(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS))
        #: the event-loop watchdog's epoch this middleware last saw (a new one: check the watchdog runs)
        self._watchdog_epoch: object = None

    def _captured(self, message: Scope, regexes: list[str], normalise: Callable[[str], str]) -> dict[str, Any]:
        from opentelemetry.instrumentation.asgi import collect_custom_headers_attributes

        return dict(collect_custom_headers_attributes(dict(message), self._sanitize, regexes, normalise))

    def _request_attributes(self, scope: Scope, view: RequestView, method: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {"http.request.method": method} if method else {}
        if method == "_OTHER":
            attributes["http.request.method_original"] = scope.get("method", "")
        scheme = scope.get("scheme")
        if scheme:
            attributes["url.scheme"] = scheme
        headers = view.first  # the singletons (host, user agent) by their first line
        _server_attributes(scope, headers, attributes)
        version = scope.get("http_version")
        if version:
            attributes["network.protocol.version"] = version
        path = scope.get("path")
        if path:
            attributes["url.path"] = path
        if view.raw_query:
            attributes["url.query"] = view.query(self._words)
        user_agent = headers.get("user-agent")
        if user_agent:
            original, synthetic = self._user_agents.attributes(user_agent)
            if original:
                attributes["user_agent.original"] = original
            if synthetic:
                attributes["user_agent.synthetic.type"] = synthetic
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
            attributes["client.port"] = client[1]
        if self._capture_request:
            attributes.update(self._captured(scope, self._capture_request, normalise_request_header_name))
        return attributes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Trace, measure and log one HTTP or WebSocket connection; other scopes pass straight through."""
        if self._watchdog_epoch is not event_loop.epoch:  # the lifespan or first request on this loop
            self._watchdog_epoch = event_loop.ensure_started()
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        view = view_of(scope)
        if self._excluded.excluded(scope, view):
            await self.app(scope, receive, send)
            return
        request, context, token = self._start(scope, view)
        span = request.span
        span_token = otel_context.attach(context)
        request.user, user_token = open_slot()
        request_token = event_loop.REQUEST.set(request)  # where the event-loop watchdog finds the request
        if http := scope["type"] == "http":
            self._active.change(request.active, 1)
        request.request_size = _size(view.first.get("content-length"))

        async def send_and_observe(message: Message) -> None:
            message_type = message["type"]
            if message_type == "http.response.start":
                request.status = int(message["status"])
                for name, value in message.get("headers") or ():
                    if name.lower() == b"content-length":
                        request.response_size = _size(value)
                if self._capture_response and span.is_recording():
                    span.set_attributes(self._captured(message, self._capture_response, normalise_response_header_name))
            await send(message)
            # a 5xx is finished when the app returns: the exception behind it (re-raised by Starlette's
            # ServerErrorMiddleware right after it sends the 500) goes on the span first
            if message_type == "http.response.body" and not message.get("more_body", False) and (
                    request.status or 0) < 500:
                self._finish(request, None)

        try:
            if http:
                await self.app(scope, receive, send_and_observe)
            else:
                await self.app(scope, *_websocket_channels(request, receive, send))
        except BaseException as exc:
            mark_exception(exc, request.context)
            self._finish(request, exc)
            raise
        finally:
            self._finish(request, None)
            if http:
                self._measure(request)
            close_slot(user_token)
            event_loop.REQUEST.reset(request_token)
            otel_context.detach(span_token)
            if token is not None:
                otel_context.detach(token)

    def _start(
        self, scope: Scope, view: RequestView
    ) -> tuple[_Request, otel_context.Context, Token[otel_context.Context] | None]:
        """The request's span, started (SERVER, or INTERNAL under a span already current) with its parent.

        Returns the request, the context holding its span, and the token of the incoming context it
        attached (None when nested).
        """
        raw_method = scope.get("method", "")
        method = self._methods.get(raw_method)
        if method is None:  # sanitize_method reads its environment variable at every call: once per method here
            method = sanitize_method(raw_method.strip()) or ""
            if len(self._methods) < _MAX_METHODS:
                self._methods[raw_method] = method
        attributes = self._request_attributes(scope, view, method)
        token = None
        if trace.get_current_span() is trace.INVALID_SPAN:
            parent = view.parent()
            token = otel_context.attach(parent)
            kind = SpanKind.SERVER
        else:
            parent = otel_context.get_current()
            kind = SpanKind.INTERNAL
        request = _Request(scope, "HTTP" if method == "_OTHER" else method, attributes)
        request.span = self._tracer.start_span(request.method or scope.get("path", ""), context=parent,
                                               kind=kind, attributes=attributes)
        request.context = context = trace.set_span_in_context(request.span, parent)
        return request, context, token

    def _finish(self, request: _Request, exc: BaseException | None) -> None:
        """Name, status and end the span and write the request log, once per request."""
        if request.finished:
            return
        request.finished = True
        scope, span, method = request.scope, request.span, request.method
        request.route = route = route_template(scope)
        user = user_of(request.user, scope, self._words)
        if span.is_recording():
            # set together: one lock and one pass over the limits for what the response added
            ending: dict[str, Any] = dict(user) if user else {}  # set_user did already; scope["user"] is read now
            if route:
                span.update_name(f"{method} {route}" if method else route)
                ending["http.route"] = route
            status = request.status
            if status is not None:
                ending["http.response.status_code"] = status
                if status >= 500:
                    ending["error.type"] = str(status)
                    span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(ending)
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                if status is None:
                    span.set_attribute("error.type", type(exc).__qualname__)
        if self._request_log is not None:
            duration_ms = (time.perf_counter() - request.started) * 1000.0
            if scope["type"] == "http":
                self._request_log(scope, request.status or 500, duration_ms, route, user)
            else:
                close_code = request.close_code
                if close_code is None and exc is not None:
                    close_code = _WS_INTERNAL_ERROR
                self._request_log.websocket(scope, close_code, duration_ms, route, user)
        span.end()

    def _measure(self, request: _Request) -> None:
        """The duration and body sizes, with the attributes the stable conventions list; one request fewer active."""
        attributes = request.attributes
        metric: dict[str, Any] = {"http.request.method": attributes.get("http.request.method", "")}
        for key in ("url.scheme", "network.protocol.version"):
            if key in attributes:
                metric[key] = attributes[key]
        if request.route:
            metric["http.route"] = request.route
        if request.status is not None:
            metric["http.response.status_code"] = request.status
            if request.status >= 500:
                metric["error.type"] = str(request.status)
        self._duration.record(max(time.perf_counter() - request.started, 0.0), metric, context=request.context)
        self._active.change(request.active, -1)
        if request.response_size is not None:
            self._response_size.record(request.response_size, metric, context=request.context)
        if request.request_size is not None:
            self._request_size.record(request.request_size, metric, context=request.context)


def _websocket_channels(request: _Request, receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` that note a WebSocket's close code, whichever side closes it."""

    async def receive_websocket() -> Message:
        message = await receive()
        if message["type"] == "websocket.disconnect" and request.close_code is None:
            request.close_code = int(message.get("code", 1005))
        return message

    async def send_websocket(message: Message) -> None:
        if message["type"] == "websocket.close":
            request.close_code = int(message.get("code", 1000))
        elif message["type"] == "websocket.http.response.start":  # the handshake was denied
            request.status = int(message["status"])
        await send(message)

    return receive_websocket, send_websocket


class _Request:
    """One request in flight: what the middleware knows of it, filled in as the response is sent."""

    __slots__ = ("active", "attributes", "close_code", "context", "finished", "method", "request_size",
                 "response_size", "route", "scope", "span", "started", "status", "user")

    def __init__(self, scope: Scope, method: str, attributes: dict[str, Any]) -> None:
        self.scope = scope
        self.method = method
        self.attributes = attributes
        self.active = (attributes.get("http.request.method", ""), attributes.get("url.scheme", "http"))
        self.started = time.perf_counter()
        self.span: Span = trace.INVALID_SPAN
        self.context: otel_context.Context | None = None
        self.status: int | None = None
        self.response_size: int | None = None
        self.request_size: int | None = None
        self.route: str | None = None
        self.close_code: int | None = None  # a WebSocket's, from whichever side closed it
        self.user: UserSlot | None = None
        self.finished = False

    def where(self) -> tuple[str, str | None]:
        """The request as the event-loop watchdog's record names it (``GET /items/{id}``), and its route template.

        Called from the watchdog's thread while the loop is blocked inside the request: the route is
        read from the scope the router has filled in by then (the path when it has not routed yet).
        """
        route = self.route or route_template(self.scope)
        target = route or self.scope.get("path") or ""
        return f"{self.method} {target}".strip(), route


def _size(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
