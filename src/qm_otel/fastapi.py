"""``instrument_app(app)``: one server span and one duration histogram per request, correlated.

qm-otel lets the contrib FastAPI instrumentation produce the HTTP spans and metrics (the
choice and its measurements are in docs/SYSTEM_LOG.md). FastAPI's own native telemetry
(FastAPI >= 0.16x) sees the contrib middleware in the built stack and steps aside, so a
request never yields two server spans or two ``http.server.request.duration`` points.

The resulting stack, outermost first::

    CorrelationMiddleware  →  ServerErrorMiddleware  →  OpenTelemetryMiddleware (server span)  →  the app

The correlation step runs before the server span starts (so the span can take the trace ID the
incoming ID maps to) and outside every error handler (so a 500 carries ``X-Correlation-ID`` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

# the classes themselves: under opentelemetry-instrument, ``fastapi.FastAPI`` and
# ``starlette.applications.Starlette`` are replaced by subclasses (see qm_otel.distro)
from fastapi.applications import FastAPI
from starlette.applications import Starlette

from qm_otel.asgi import CorrelationMiddleware, RequestLogMiddleware
from qm_otel.bootstrap import Telemetry, current
from qm_otel.config import Settings
from qm_otel.conventions import conventions
from qm_otel.redaction import redact_query

__all__ = ["fastapi_instrumentor_kwargs", "instrument_app"]

_FLUSH_TAG = "_qm_otel_flush_on_shutdown"
_CORRELATION_TAG = "_qm_otel_correlated"


def fastapi_instrumentor_kwargs(settings: Settings) -> dict[str, Any]:
    """The keyword arguments qm-otel gives the contrib FastAPI instrumentation, on both launch paths."""
    words = settings.sensitive_fields

    def redact_query_attribute(span: Any, scope: dict[str, Any]) -> None:
        query = scope.get("query_string", b"")
        if query and span.is_recording():
            span.set_attribute("url.query", redact_query(query.decode("latin-1"), words))

    return {
        # one server span per request: no internal "http send"/"http receive" spans
        "exclude_spans": ["receive", "send"],
        "excluded_urls": ",".join(settings.excluded_urls),
        "server_request_hook": redact_query_attribute,
    }


def _flush_at_lifespan_end(app: Any, handle: Telemetry) -> None:
    """Flush (bounded) when the app's lifespan ends: uvicorn's graceful SIGTERM path skips ``atexit``."""
    router = getattr(app, "router", None)
    original: Callable[[Any], Any] | None = getattr(router, "lifespan_context", None)
    if router is None or original is None or getattr(router, _FLUSH_TAG, False):
        return

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with original(app_) as state:
            yield state
        await asyncio.to_thread(handle.force_flush)

    router.lifespan_context = lifespan
    setattr(router, _FLUSH_TAG, True)


def _wrap_stack(app: Any, wrap: Callable[[Any], Any]) -> None:
    """Put ``wrap`` around whatever ``app.build_middleware_stack`` builds (Starlette builds it lazily)."""
    build = app.build_middleware_stack

    def build_middleware_stack(self: Any) -> Any:
        del self
        return wrap(build())

    app.build_middleware_stack = types.MethodType(build_middleware_stack, app)
    app.middleware_stack = None  # rebuilt on the next request, if it was built already


def _route_template(scope: dict[str, Any]) -> str | None:
    from starlette.routing import Match

    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", None)
    return None


def _starlette_span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Span name ``METHOD /route/{template}`` and ``http.route``, as the FastAPI instrumentation does."""
    method = scope.get("method", "HTTP")
    template = _route_template(scope)
    if template is None:
        return method, {}
    return f"{method} {template}", {"http.route": template}


def _instrument_http(app: Any, handle: Telemetry) -> None:
    """The server span and HTTP metrics: the contrib FastAPI instrumentation, or its ASGI middleware."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return
    kwargs = fastapi_instrumentor_kwargs(handle.settings)
    if isinstance(app, FastAPI):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=handle.tracer_provider, meter_provider=handle.meter_provider, **kwargs
        )
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware.errors import ServerErrorMiddleware

    def with_server_span(stack: Any) -> Any:
        middleware = OpenTelemetryMiddleware(
            stack,
            default_span_details=_starlette_span_details,
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
            **kwargs,
        )
        return ServerErrorMiddleware(middleware)

    _wrap_stack(app, with_server_span)
    app._is_instrumented_by_opentelemetry = True


def instrument_app(app: Any) -> None:
    """Instrument a FastAPI or Starlette application created before or after ``setup()``.

    Safe to call more than once and on an app the ``opentelemetry-instrument`` wrapper already
    instrumented. Raises RuntimeError before ``setup()``, TypeError for other kinds of app.
    """
    handle = current()
    if handle is None:
        message = "qm_otel.instrument_app(app) needs qm_otel.setup() first"
        raise RuntimeError(message)
    if not isinstance(app, Starlette):
        message = f"qm_otel.instrument_app() expects a FastAPI or Starlette application, got {type(app).__name__}"
        raise TypeError(message)
    _instrument_http(app, handle)
    if not getattr(app, _CORRELATION_TAG, False):
        settings = handle.settings
        slow_ms = conventions().slow_request_ms

        def outermost(stack: Any) -> Any:
            if settings.request_log:
                stack = RequestLogMiddleware(stack, excluded=settings.excluded_urls, slow_ms=slow_ms)
            return CorrelationMiddleware(
                stack,
                header_names=settings.correlation_headers,
                response_header=settings.correlation_headers[0],
                trust_incoming=settings.trust_incoming_ids,
            )

        _wrap_stack(app, outermost)
        setattr(app, _CORRELATION_TAG, True)
    _add_health_routes(app, handle.settings)
    _flush_at_lifespan_end(app, handle)


def _add_health_routes(app: Any, settings: Settings) -> None:
    """Serve the liveness and readiness endpoints (unless the app already routes those paths)."""
    from qm_otel.health import health_routes

    taken = {getattr(route, "path", None) for route in app.router.routes}
    for route in health_routes(settings.health_path, settings.ready_path):
        if route.path not in taken:
            app.router.routes.append(route)
