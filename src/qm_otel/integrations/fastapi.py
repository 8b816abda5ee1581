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
from typing import TYPE_CHECKING, Any

# the classes themselves: under opentelemetry-instrument, ``fastapi.FastAPI`` and
# ``starlette.applications.Starlette`` are replaced by subclasses (see qm_otel.distro)
from fastapi.applications import FastAPI
from starlette.applications import Starlette

from qm_otel import _state
from qm_otel.config import Settings
from qm_otel.integrations.asgi import CorrelationMiddleware, RequestLogMiddleware
from qm_otel.integrations.health import health_routes
from qm_otel.redaction import server_request_hook

if TYPE_CHECKING:
    from qm_otel.bootstrap import Telemetry

__all__ = ["fastapi_instrumentor_kwargs", "instrument_app"]

_FLUSH_TAG = "_qm_otel_flush_on_shutdown"
_CORRELATION_TAG = "_qm_otel_correlated"
_PIPELINE_TAG = "_qm_otel_pipeline"


def fastapi_instrumentor_kwargs(settings: Settings) -> dict[str, Any]:
    """The keyword arguments qm-otel gives the contrib FastAPI instrumentation, on both launch paths."""
    return {
        # one server span per request: no internal "http send"/"http receive" spans
        "exclude_spans": ["receive", "send"],
        "excluded_urls": ",".join(settings.excluded_urls),
        "server_request_hook": server_request_hook(settings.sensitive_fields),
    }


def _flush_at_lifespan_end(app: Any) -> None:
    """Flush (bounded) when the app's lifespan ends: uvicorn's graceful SIGTERM path skips ``atexit``."""
    router = getattr(app, "router", None)
    original: Callable[[Any], Any] | None = getattr(router, "lifespan_context", None)
    if router is None or original is None or getattr(router, _FLUSH_TAG, False):
        return

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with original(app_) as state:
            yield state
        active = _state.get()  # the pipeline running when the app stops, not the one it started with
        if active is not None and active.telemetry is not None:
            await asyncio.to_thread(active.telemetry.force_flush)

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


def _active() -> tuple[_state.State, Telemetry]:
    """The running pipeline's state and handle, for an app being instrumented or a stack being built."""
    state = _state.get()
    if state is None or state.telemetry is None:
        message = "qm_otel.instrument_app(app) needs qm_otel.setup() first"
        raise RuntimeError(message)
    return state, state.telemetry


def _instrument_http(app: Any, state: _state.State, telemetry: Telemetry) -> None:
    """The server span and HTTP metrics: the contrib FastAPI instrumentation, or its ASGI middleware."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return
    if isinstance(app, FastAPI):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        _native_telemetry_off(app)
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
            **fastapi_instrumentor_kwargs(state.settings),
        )
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware.errors import ServerErrorMiddleware

    def with_server_span(stack: Any) -> Any:
        built, handle = _active()  # the pipeline in force when the stack is (re)built
        middleware = OpenTelemetryMiddleware(
            stack,
            default_span_details=_starlette_span_details,
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
            **fastapi_instrumentor_kwargs(built.settings),
        )
        return ServerErrorMiddleware(middleware)

    _wrap_stack(app, with_server_span)
    app._is_instrumented_by_opentelemetry = True


def _native_telemetry_off(app: Any) -> None:
    """Take FastAPI's native telemetry (FastAPI >= 0.16x) out of every request's path.

    It would step aside for qm-otel's server span anyway, but only after sitting in the stack and
    inspecting it on each request. This is the documented ``FastAPI(telemetry={"tracing": False,
    "metrics": False, "logs": False})``, applied to an app that already exists.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False)


def _outermost(stack: Any) -> Any:
    """The correlation middleware (and the request log inside it), with the settings in force now."""
    state, _ = _active()
    settings = state.settings
    if settings.request_log:
        stack = RequestLogMiddleware(stack, excluded=settings.excluded_urls, slow_ms=state.conventions.slow_request_ms,
                                     band=state.conventions.bands["response_time"])
    return CorrelationMiddleware(
        stack,
        header_names=settings.correlation_headers,
        response_header=settings.correlation_headers[0],
        trust_incoming=settings.trust_incoming_ids,
    )


def _forget_old_pipeline(app: Any) -> None:
    """The app was instrumented for a pipeline that was shut down since: undo it, to instrument again."""
    if isinstance(app, FastAPI) and getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.uninstrument_app(app)  # restores the original stack builder: our wrap goes too
        setattr(app, _CORRELATION_TAG, False)
    app.middleware_stack = None  # the Starlette wraps read the state when the stack is rebuilt


def instrument_app(app: Any) -> None:
    """Instrument a FastAPI or Starlette application created before or after ``setup()``.

    Safe to call more than once and on an app the ``opentelemetry-instrument`` wrapper already
    instrumented; after ``shutdown()`` and a new ``setup()``, calling it again moves the app to the
    new pipeline. Raises RuntimeError before ``setup()``, TypeError for other kinds of app.
    """
    state, telemetry = _active()
    if not isinstance(app, Starlette):
        message = f"qm_otel.instrument_app() expects a FastAPI or Starlette application, got {type(app).__name__}"
        raise TypeError(message)
    instrumented_for = getattr(app, _PIPELINE_TAG, None)
    if instrumented_for is not None and instrumented_for is not telemetry:
        _forget_old_pipeline(app)
    setattr(app, _PIPELINE_TAG, telemetry)
    _instrument_http(app, state, telemetry)
    if not getattr(app, _CORRELATION_TAG, False):
        _wrap_stack(app, _outermost)
        setattr(app, _CORRELATION_TAG, True)
    _add_health_routes(app, state.settings)
    _flush_at_lifespan_end(app)


def _add_health_routes(app: Any, settings: Settings) -> None:
    """Serve the liveness and readiness endpoints (unless the app already routes those paths)."""
    taken = {getattr(route, "path", None) for route in app.router.routes}
    for route in health_routes(settings.health_path, settings.ready_path):
        if route.path not in taken:
            app.router.routes.append(route)
