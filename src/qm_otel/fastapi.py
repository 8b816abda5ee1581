"""``instrument_app(app)``: one server span and one duration histogram per request.

qm-otel lets the contrib FastAPI instrumentation produce the HTTP spans and metrics (the
choice and its measurements are in docs/SYSTEM_LOG.md). FastAPI's own native telemetry
(FastAPI >= 0.16x) sees the contrib middleware in the built stack and steps aside, so a
request never yields two server spans or two ``http.server.request.duration`` points.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from qm_otel.bootstrap import Telemetry, current
from qm_otel.config import Settings

__all__ = ["fastapi_instrumentor_kwargs", "instrument_app"]

_FLUSH_TAG = "_qm_otel_flush_on_shutdown"


def fastapi_instrumentor_kwargs(settings: Settings) -> dict[str, Any]:
    """The keyword arguments qm-otel gives the contrib FastAPI instrumentation, on both launch paths."""
    return {
        # one server span per request: no internal "http send"/"http receive" spans
        "exclude_spans": ["receive", "send"],
        "excluded_urls": ",".join(settings.excluded_urls),
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


def instrument_app(app: Any) -> None:
    """Instrument a FastAPI application created before or after ``setup()``.

    Safe to call more than once and on an app the ``opentelemetry-instrument`` wrapper already
    instrumented. Raises RuntimeError before ``setup()``.
    """
    handle = current()
    if handle is None:
        message = "qm_otel.instrument_app(app) needs qm_otel.setup() first"
        raise RuntimeError(message)
    from fastapi import FastAPI

    if not isinstance(app, FastAPI):
        message = f"qm_otel.instrument_app() expects a fastapi.FastAPI application, got {type(app).__name__}"
        raise TypeError(message)
    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
            **fastapi_instrumentor_kwargs(handle.settings),
        )
    _flush_at_lifespan_end(app, handle)
