"""``instrument_app(app)``: one server span, the HTTP metrics and one request-log record per request, correlated.

qm-otel makes the server span and the HTTP server metrics itself
(:class:`~qm_otel.integrations.server.ServerTelemetryMiddleware`, with the contrib instrumentation's
semantics; the measurements that led there are in docs/benchmarks.md) and switches FastAPI's own
native telemetry (FastAPI >= 0.16x) off for the app, so a request never yields two server spans
or two ``http.server.request.duration`` points. The resulting stack, outermost first::

    CorrelationMiddleware  →  ServerTelemetryMiddleware (server span, metrics, request log)  →  the app's stack

The correlation step runs before the server span starts (so the span can take the trace ID the
incoming ID maps to) and outside every error handler (so a 500 carries ``X-Correlation-ID`` too).
The two are built when Starlette builds the app's middleware stack, from the pipeline in force
then: after ``shutdown()`` and a new ``setup()``, the app moves to the new pipeline; a stack built
while no pipeline runs is the app's own.

What is done to each app (its ``build_middleware_stack``, its router's ``lifespan_context``, the
contrib instrumentations' flag) is listed, with why it is not undone at ``shutdown()``, in
:mod:`qm_otel.integrations.patches`. What qm-otel knows of each app it instrumented is kept beside
the app in a weak mapping (:data:`_APPS`), never as attributes on it: it goes with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import types
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

# the classes themselves: under opentelemetry-instrument, ``fastapi.FastAPI`` and
# ``starlette.applications.Starlette`` are replaced by subclasses (see qm_otel.launch.distro)
from starlette.applications import Starlette

try:
    from fastapi.applications import FastAPI
except ImportError:  # a Starlette application without FastAPI: qm-otel[fastapi] is optional
    _FASTAPI: tuple[type, ...] = ()
else:
    _FASTAPI = (FastAPI,)

from qm_otel import _state
from qm_otel.core.config import SETTINGS, Settings
from qm_otel.core.conventions import CONVENTIONS, Conventions
from qm_otel.integrations.correlation_middleware import CorrelationMiddleware
from qm_otel.integrations.health import health_routes
from qm_otel.integrations.request_log import RequestLog, RequestLogMiddleware
from qm_otel.integrations.server import ServerTelemetryMiddleware
from qm_otel.runtime import event_loop

__all__ = ["instrument_app"]

#: the contrib instrumentations' flag: they leave an app alone that carries it. It stays an attribute
#: on the app (not in :data:`_APPS`): it is their protocol, read by their code
_CONTRIB_FLAG = "_is_instrumented_by_opentelemetry"


@dataclass
class _AppState:
    """What qm-otel did to one app: its stack is wrapped (it is in :data:`_APPS` at all), and the rest."""

    #: the pipeline the app was last instrumented for (weakly: a closed pipeline is not kept alive)
    pipeline: weakref.ref[Any] | None = None
    #: its router's lifespan flushes at its end
    flushing: bool = False


#: every app qm-otel instrumented → what it did to it; an app's entry goes with the app
_APPS: weakref.WeakKeyDictionary[Any, _AppState] = weakref.WeakKeyDictionary()


def _flush_at_lifespan_end(app: Any, done: _AppState) -> None:
    """Flush (bounded) when the app's lifespan ends: uvicorn's graceful SIGTERM path skips ``atexit``.

    Its start starts the event-loop watchdog on the loop that serves (:mod:`qm_otel.runtime.event_loop`;
    the server middleware also checks on each request, for a server that runs no lifespan).
    """
    router = getattr(app, "router", None)
    original: Callable[[Any], Any] | None = getattr(router, "lifespan_context", None)
    if router is None or original is None or done.flushing:
        return

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        event_loop.ensure_started()
        async with original(app_) as state:
            yield state
        pipeline = _state.PIPELINE.get()  # the pipeline running when the app stops, not the one it started with
        if pipeline is not None:
            await asyncio.to_thread(functools.partial(pipeline.force_flush, final=True))

    router.lifespan_context = lifespan
    done.flushing = True


def _wrap_stack(app: Any, wrap: Callable[[Any], Any]) -> None:
    """Put ``wrap`` around whatever ``app.build_middleware_stack`` builds (Starlette builds it lazily)."""
    build = app.build_middleware_stack

    def build_middleware_stack(self: Any) -> Any:
        del self
        return wrap(build())

    app.build_middleware_stack = types.MethodType(build_middleware_stack, app)
    app.middleware_stack = None  # rebuilt on the next request, if it was built already


@dataclass(frozen=True)
class _Running:
    """What an app being instrumented, or a stack being built, takes from the state room."""

    settings: Settings
    conventions: Conventions
    pipeline: _state.Pipeline


def _active() -> _Running:
    """The running pipeline, its settings and conventions; RuntimeError before ``setup()``."""
    settings, conventions, pipeline = SETTINGS.get(), CONVENTIONS.get(), _state.PIPELINE.get()
    if settings is None or conventions is None or pipeline is None:
        message = "qm_otel.instrument_app(app) needs qm_otel.setup() first"
        raise RuntimeError(message)
    return _Running(settings, conventions, pipeline)


def _native_telemetry_off(app: Any) -> None:
    """Take FastAPI's native telemetry (FastAPI >= 0.16x) out of every request's path.

    It would step aside for qm-otel's server span anyway, but only after sitting in the stack and
    inspecting it on each request. This is the documented ``FastAPI(telemetry={"tracing": False,
    "metrics": False, "logs": False})``, applied to an app that already exists.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False)


def _outermost(stack: Any, *, server_span: bool) -> Any:
    """Correlation outermost, then the server span, metrics and request log, with the pipeline in force now.

    ``server_span`` is False for an app the contrib instrumentation had already instrumented before
    qm-otel saw it: its span stays, and only the request log is added. While no pipeline runs (after
    ``shutdown()``), the app's own stack.
    """
    if _state.PIPELINE.get() is None:
        return stack
    running = _active()
    settings, pipeline = running.settings, running.pipeline
    slow_ms, band = running.conventions.slow_request_ms, running.conventions.bands["response_time"]
    if server_span:
        stack = ServerTelemetryMiddleware(
            stack,
            tracer_provider=pipeline.tracer_provider,
            meter_provider=pipeline.meter_provider,
            excluded=settings.excluded_urls,
            sensitive_fields=settings.sensitive_fields,
            request_log=RequestLog(slow_ms=slow_ms, band=band, sensitive=settings.sensitive_fields)
            if settings.request_log else None,
        )
    elif settings.request_log:
        stack = RequestLogMiddleware(stack, excluded=settings.excluded_urls, slow_ms=slow_ms, band=band,
                                     sensitive=settings.sensitive_fields)
    return CorrelationMiddleware(
        stack,
        header_names=settings.correlation_headers,
        response_header=settings.correlation_headers[0],
        trust_incoming=settings.trust_incoming_ids,
    )


def instrument_app(app: Any) -> None:
    """Instrument a FastAPI or Starlette application created before or after ``setup()``.

    Safe to call more than once and on an app the ``opentelemetry-instrument`` wrapper already
    instrumented; after ``shutdown()`` and a new ``setup()``, the app moves to the new pipeline.
    Raises RuntimeError before ``setup()``, TypeError for other kinds of app.
    """
    running = _active()
    if not isinstance(app, Starlette):
        message = f"qm_otel.instrument_app() expects a FastAPI or Starlette application, got {type(app).__name__}"
        raise TypeError(message)
    if isinstance(app, _FASTAPI):
        _native_telemetry_off(app)
    state = _APPS.get(app)
    if state is None:
        server_span = not getattr(app, _CONTRIB_FLAG, False)

        def outermost(stack: Any) -> Any:
            return _outermost(stack, server_span=server_span)

        _wrap_stack(app, outermost)
        state = _APPS[app] = _AppState()
        setattr(app, _CONTRIB_FLAG, True)  # the contrib instrumentors now leave it alone: no second span
    elif state.pipeline is None or state.pipeline() is not running.pipeline:
        app.middleware_stack = None  # rebuilt on the next request, for the pipeline in force now
    state.pipeline = weakref.ref(running.pipeline)
    _add_health_routes(app, running.settings)
    _flush_at_lifespan_end(app, state)


def _add_health_routes(app: Any, settings: Settings) -> None:
    """Serve the liveness and readiness endpoints (unless the app already routes those paths)."""
    taken = {getattr(route, "path", None) for route in app.router.routes}
    for route in health_routes(settings.health_path, settings.ready_path):
        if route.path not in taken:
            app.router.routes.append(route)
