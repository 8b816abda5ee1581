"""Host patching: everything qm-otel changes in code or process state it does not own, and its undo.

Each change is a row of :data:`PATCHES` (a :class:`Patch`: what it replaces, why, how ``shutdown()``
undoes it). A pipeline applies the process-wide ones through its :class:`PatchSet`, which the
``Telemetry`` handle owns; ``shutdown()`` undoes them, the last first. Each undo puts back what was
there only if qm-otel's replacement is still in place: what another library installed over it
since is left alone (it may call qm-otel's; that does what the original did once no pipeline runs).

Process-wide, undone by ``shutdown()``:

- ``asyncio.BaseEventLoop.run_in_executor``: runs the function in a copy of the caller's context
  (:func:`qm_otel.core.work_context.copying_context`). ``asyncio.to_thread`` and Starlette's thread
  pool copy it already; ``run_in_executor`` does not, so records logged there lost their trace and
  correlation IDs. Applied by ``setup()``.
- ``fastapi.FastAPI`` and ``starlette.applications.Starlette``: subclasses whose constructor calls
  ``instrument_app``, so an app made by code qm-otel never sees is instrumented. Applied under
  ``opentelemetry-instrument`` only (:mod:`qm_otel.launch.distro`), FastAPI's first: importing
  FastAPI before Starlette's class is replaced keeps FastAPI's own base class, so an app is
  instrumented once. A class bound before ``shutdown()`` (``from fastapi import FastAPI``) makes
  plain apps once no pipeline runs.
- ``opentelemetry.propagate``'s global text-map propagator: the same propagators with
  ``X-Correlation-ID`` added (:func:`qm_otel.core.correlation.install_outbound_propagator`), so
  outgoing requests carry it. Applied by ``setup()``.
- the ``opentelemetry.sdk._shared_internal`` logger's filters: one more first, which counts the
  batch processors' "Queue full" drops (:func:`qm_otel.signals.drops.count_dropped`). Applied by
  ``setup()``.
- the SIGTERM handler: one that flushes (bounded) and then dies by the signal as before. uvicorn
  re-raises a captured SIGTERM after its graceful shutdown, with the handler that was there before
  it started: ``atexit`` never runs, but this handler does. Installed by ``setup()`` only when
  SIGTERM has its default action and from the main thread; put back to the default by
  ``shutdown()`` from the main thread (Python sets signal handlers there only: from another thread
  it stays, and once no pipeline runs it only dies by the signal, as the default would).
- ``atexit``: ``shutdown()`` of the pipeline, so a process that ends flushes; unregistered by it.
- ``os.environ``, each variable only when it is unset: ``OTEL_SEMCONV_STABILITY_OPT_IN=http`` and
  ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` (read by the instrumentations),
  ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=host,os,process`` (the SDK re-runs those after ``fork``
  only when named there), ``UVICORN_LOG_CONFIG`` (under ``opentelemetry-instrument``: uvicorn's
  loggers then propagate into qm-otel's pipeline). Removed by ``shutdown()`` if they still hold
  the value qm-otel set; a value the user set is never touched.
- the ``opentelemetry`` logger's level, when ``OTEL_LOG_LEVEL`` is set: the SDK never reads that
  variable itself (:func:`qm_otel.signals.logs.sdk_log_level`); put back if it is still that level.
- the root logger: qm-otel's handler (stdout and OTLP in one pass; the rotating file, opt-in) is
  added, the console handlers set up before it (``logging.basicConfig``'s) are taken off so no line
  is printed twice, and its level set to ``log_level`` (:func:`qm_otel.logs.pipeline.install_root_handlers`;
  with ``log_config``, the file's root handlers replace the ones there were). ``shutdown()`` removes
  and closes qm-otel's handlers; if they were still on the root logger, the ones taken off go back
  where they were; the level goes back if it is still qm-otel's. Applied by ``setup()``.
- uvicorn's loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``): their handlers taken off,
  ``propagate`` set, and uvicorn's access lines dropped when the request log is on
  (:func:`qm_otel.logs.pipeline.route_uvicorn_loggers`), so their records go through qm-otel's
  pipeline. ``shutdown()`` puts back a logger's handlers if it still has none, its flag if it still
  propagates, and takes the access filter off. Applied by ``setup()``, and again by every later
  ``setup()`` call (uvicorn's ``dictConfig`` may have run since): each call's changes are undone,
  the last first.
- the ``httpx`` and ``httpcore`` loggers' filters: one that redacts the URLs they log
  (:func:`qm_otel.core.redaction.redact_logged_urls`). Removed by ``shutdown()`` if still there.
  Applied by ``setup()``.
- ``sys.meta_path``: a finder that calls back right after a waited-for library's first import
  (:mod:`qm_otel.instrumentation.libraries`, which inserts it when something first waits and
  removes it at ``shutdown()``; ``wrapt.when_imported`` cannot unregister, see
  docs/decisions/import-hook.md).

Per app, by :func:`qm_otel.integrations.fastapi.instrument_app`, not undone:

- ``app.build_middleware_stack``: wraps the stack Starlette builds in qm-otel's middleware;
- ``app.router.lifespan_context``: flushes (bounded) when the lifespan ends and starts the
  event-loop watchdog when it starts;
- ``app._is_instrumented_by_opentelemetry``: the contrib instrumentations' own flag, so they do not
  add a second server span.

They belong to the app and go with it; qm-otel keeps what it did to each app in a weak mapping
(:mod:`qm_otel.integrations.fastapi`), so a later ``setup()`` moves the app to its pipeline without
wrapping it twice.

Not undone, and why: what a ``log_config`` file configures beyond the root logger (named loggers'
levels and handlers, ``disable_existing_loggers``): the user's own configuration, applied as asked
(``logging.config.dictConfig`` also closes the handlers it replaces; the root's are put back all
the same, and a stream handler writes again); ``os.register_at_fork`` hooks (Python has no way to
unregister one; each is registered once per process and does nothing for a pipeline that was shut
down), and the API's global providers (set once per process by the OpenTelemetry API;
:mod:`qm_otel.signals.global_providers` lets the next ``setup()`` replace the closed ones).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any

from opentelemetry import propagate

from qm_otel import _state
from qm_otel.core.correlation import install_outbound_propagator
from qm_otel.core.sdk_internals import SDK_BATCH_LOGGER
from qm_otel.core.work_context import copying_context
from qm_otel.signals.drops import count_dropped

__all__ = [
    "APP_CLASSES",
    "AT_EXIT",
    "CONTRIB_FLAG",
    "COUNT_DROPPED",
    "ENVIRONMENT",
    "EXECUTOR_CONTEXT",
    "FASTAPI_CLASS",
    "IMPORT_FINDER",
    "LIFESPAN",
    "MIDDLEWARE_STACK",
    "OUTBOUND_PROPAGATOR",
    "PATCHES",
    "ROOT_LOGGER",
    "SDK_LOG_LEVEL",
    "SIGTERM",
    "STARLETTE_CLASS",
    "URL_LOG_FILTERS",
    "UVICORN_LOGGERS",
    "Patch",
    "PatchSet",
]

_logger = logging.getLogger("qm_otel")

#: puts back what a patch replaced
Undo = Callable[[], None]


@dataclass(frozen=True)
class Patch:
    """One change qm-otel makes to code or process state it does not own."""

    #: what it replaces or changes
    replaces: str
    #: why qm-otel changes it
    why: str
    #: how ``shutdown()`` undoes it, or why it is not undone
    undone: str
    #: who applies it, and when
    applied_by: str
    #: applies it and returns its undo (None when there was nothing to change); None for the rows
    #: applied another way (``applied_by`` says how)
    install: Callable[[], Undo | None] | None = None


class PatchSet:
    """The patches one pipeline applied; :meth:`undo` puts back what they replaced, the last first."""

    def __init__(self) -> None:
        self._undo: list[tuple[Patch, Undo]] = []

    def apply(self, patch: Patch) -> bool:
        """Apply a row of :data:`PATCHES` that installs itself; whether anything was changed."""
        if patch.install is None:
            message = f"the patch of {patch.replaces} is applied by {patch.applied_by}, not by PatchSet.apply"
            raise ValueError(message)
        return self._keep(patch, patch.install())

    def set_default(self, name: str, value: str) -> bool:
        """``os.environ[name] = value`` unless it is set; whether qm-otel set it (then :meth:`undo` removes it)."""
        if name in os.environ:
            return False
        os.environ[name] = value

        def undo() -> None:
            if os.environ.get(name) == value:
                del os.environ[name]

        return self._keep(ENVIRONMENT, undo)

    def flush_on_sigterm(self, shutdown: Callable[[], object]) -> bool:
        """Chain a SIGTERM handler that calls ``shutdown`` and then dies by the signal (:data:`SIGTERM`)."""
        return self._keep(SIGTERM, _chain_sigterm(shutdown))

    def call_at_exit(self, shutdown: Callable[[], object]) -> bool:
        """Call ``shutdown`` when the interpreter exits, until :meth:`undo` (:data:`AT_EXIT`)."""
        atexit.register(shutdown)
        return self._keep(AT_EXIT, lambda: atexit.unregister(shutdown))

    def adopt(self, patch: Patch, undo: Undo | None) -> bool:
        """Keep the undo of a row applied by code below this layer (logs/, core/, signals/ return theirs).

        ``undo`` None: it changed nothing. Whether there is something to undo.
        """
        if patch.install is not None:
            message = f"the patch of {patch.replaces} installs itself: apply it with PatchSet.apply"
            raise ValueError(message)
        return self._keep(patch, undo)

    def applied(self) -> list[str]:
        """What the applied patches replaced, in the order they were applied."""
        return [patch.replaces for patch, _ in self._undo]

    def undo(self) -> None:
        """Undo every patch applied, the last first (``shutdown()``); a failing undo is logged, not raised."""
        while self._undo:
            patch, undo = self._undo.pop()
            try:
                undo()
            except Exception:
                _logger.exception("qm-otel could not undo its patch of %s", patch.replaces)

    def _keep(self, patch: Patch, undo: Undo | None) -> bool:
        if undo is None:
            return False
        self._undo.append((patch, undo))
        return True


def _copy_context_into_executors() -> Undo:
    cls = asyncio.BaseEventLoop
    original = cls.run_in_executor
    replacement = copying_context(original)
    setattr(cls, "run_in_executor", replacement)  # noqa: B010 - typed as a method, replaced as an attribute

    def undo() -> None:
        if vars(cls).get("run_in_executor") is replacement:
            setattr(cls, "run_in_executor", original)  # noqa: B010

    return undo


def _instrumenting(module: ModuleType, name: str) -> Undo:
    """Replace ``module.name`` (an app class) by a subclass whose constructor instruments the app."""
    from qm_otel.integrations.fastapi import instrument_app  # binds the classes themselves, before any is replaced

    base: Any = getattr(module, name)

    class Instrumenting(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if _state.PIPELINE.get() is not None:  # a class kept past shutdown() makes plain apps
                instrument_app(self)

    Instrumenting.__name__ = Instrumenting.__qualname__ = f"QmOtel{name}"
    setattr(module, name, Instrumenting)

    def undo() -> None:
        if getattr(module, name) is Instrumenting:
            setattr(module, name, base)

    return undo


def _fastapi_class() -> Undo | None:
    try:
        import fastapi
    except ImportError:  # qm-otel[fastapi] is optional: the application brings its own, or serves no HTTP
        return None
    return _instrumenting(fastapi, "FastAPI")


def _starlette_class() -> Undo | None:
    with contextlib.suppress(ImportError):
        import fastapi  # noqa: F401 - imported first: FastAPI keeps the original Starlette as its base
    try:
        import starlette.applications
    except ImportError:
        return None
    return _instrumenting(starlette.applications, "Starlette")


def _outbound_propagator() -> Undo | None:
    previous = propagate.get_global_textmap()
    install_outbound_propagator()
    installed = propagate.get_global_textmap()
    if installed is previous:  # the application had installed it already
        return None

    def undo() -> None:
        if propagate.get_global_textmap() is installed:
            propagate.set_global_textmap(previous)

    return undo


def _count_dropped() -> Undo | None:
    logger = logging.getLogger(SDK_BATCH_LOGGER)
    before = list(logger.filters)
    count_dropped()
    added = [new for new in logger.filters if new not in before]
    if not added:
        return None

    def undo() -> None:
        for counting in added:
            logger.removeFilter(counting)

    return undo


def _chain_sigterm(shutdown: Callable[[], object]) -> Undo | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # someone else's (uvicorn's, while it serves)
        return None

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        del frame
        shutdown()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return undo


EXECUTOR_CONTEXT = Patch(
    "asyncio.BaseEventLoop.run_in_executor",
    why="the function runs in a copy of the caller's context (span, correlation ID), as asyncio.to_thread's does",
    undone="the original method is put back",
    applied_by="setup()",
    install=_copy_context_into_executors,
)
FASTAPI_CLASS = Patch(
    "fastapi.FastAPI",
    why="under opentelemetry-instrument, every app made is instrumented (applied before Starlette's)",
    undone="the original class is put back; an app made from a class kept since is a plain app",
    applied_by="the configurator under opentelemetry-instrument (launch/distro), after setup()",
    install=_fastapi_class,
)
STARLETTE_CLASS = Patch(
    "starlette.applications.Starlette",
    why="under opentelemetry-instrument, every app made is instrumented",
    undone="the original class is put back; an app made from a class kept since is a plain app",
    applied_by="the configurator under opentelemetry-instrument (launch/distro), after FastAPI's",
    install=_starlette_class,
)
#: the two app classes, in the order they are replaced
APP_CLASSES = (FASTAPI_CLASS, STARLETTE_CLASS)
OUTBOUND_PROPAGATOR = Patch(
    "opentelemetry.propagate's global text-map propagator",
    why="outgoing requests carry X-Correlation-ID beside the propagators OTEL_PROPAGATORS chose",
    undone="the propagator that was global before is put back",
    applied_by="setup()",
    install=_outbound_propagator,
)
COUNT_DROPPED = Patch(
    f"the filters of the {SDK_BATCH_LOGGER} logger",
    why="the batch processors' 'Queue full' drops are counted (qm_otel.telemetry.dropped, reason=queue_full)",
    undone="the counting filter is removed",
    applied_by="setup()",
    install=_count_dropped,
)
SIGTERM = Patch(
    "the SIGTERM handler (when it is the default)",
    why="uvicorn's graceful SIGTERM path skips atexit: the handler flushes, then dies by the signal as before",
    undone="the default action is put back (from the main thread; from another, the handler only dies by the signal)",
    applied_by="setup(), through PatchSet.flush_on_sigterm",
)
AT_EXIT = Patch(
    "atexit's callbacks",
    why="a process that ends flushes what is buffered, within the shutdown budget",
    undone="the callback is unregistered",
    applied_by="setup(), through PatchSet.call_at_exit",
)
ENVIRONMENT = Patch(
    "os.environ: OTEL_SEMCONV_STABILITY_OPT_IN, OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS, "
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS, UVICORN_LOG_CONFIG (each only when unset)",
    why="defaults the instrumentations, the SDK's resource detectors and uvicorn read",
    undone="each variable qm-otel set is removed, if it still holds qm-otel's value",
    applied_by="setup() and the configurator, through PatchSet.set_default",
)
ROOT_LOGGER = Patch(
    "the root logger's handlers and level",
    why="each record is written once, by qm-otel's handler (stdout and OTLP in one pass): console handlers set "
        "up before it (logging.basicConfig) are taken off; the level is log_level",
    undone="qm-otel's handlers are removed and closed; if they were still on the root logger, the handlers taken "
           "off are put back where they were; the level is put back if it is still qm-otel's",
    applied_by="setup(): logs/pipeline.install_root_handlers (through signals/logs), which returns its undo",
)
UVICORN_LOGGERS = Patch(
    "the uvicorn, uvicorn.error and uvicorn.access loggers' handlers, propagate flags and filters",
    why="uvicorn's records go through qm-otel's pipeline; its access lines are dropped when the request log "
        "replaces them",
    undone="a logger's handlers are put back if it still has none, its flag if it still propagates; the access "
           "filter is taken off",
    applied_by="setup() and every later setup() call: logs/pipeline.route_uvicorn_loggers, which returns its undo",
)
SDK_LOG_LEVEL = Patch(
    "the level of the opentelemetry logger",
    why="OTEL_LOG_LEVEL names the level of the SDK's own log lines, which the SDK itself never reads",
    undone="the level it replaced is put back if the level is still the one OTEL_LOG_LEVEL set",
    applied_by="setup(): signals/logs.sdk_log_level, which returns its undo",
)
URL_LOG_FILTERS = Patch(
    "the filters of the httpx and httpcore loggers",
    why="the URLs HTTP clients log have their secrets redacted (query values, user:password)",
    undone="the redacting filter is removed if it is still there (and one it replaced put back)",
    applied_by="setup(): core/redaction.redact_logged_urls, which returns its undo",
)
IMPORT_FINDER = Patch(
    "sys.meta_path",
    why="a library not imported yet is instrumented right after its first import (start-up does not pay for it)",
    undone="qm_otel.instrumentation.libraries.Instrumentation.close() removes the finder and what waits",
    applied_by="instrumentation/libraries, when something first waits for an import (Instrumentation)",
)
MIDDLEWARE_STACK = Patch(
    "app.build_middleware_stack (per app)",
    why="the stack Starlette builds is wrapped in qm-otel's correlation and server middleware",
    undone="not undone: it belongs to the app and goes with it; a stack built while no pipeline runs is the "
           "app's own, and a later setup() rebinds it, never wraps it twice",
    applied_by="integrations/fastapi.instrument_app, per app",
)
LIFESPAN = Patch(
    "app.router.lifespan_context (per app)",
    why="the lifespan's end flushes (uvicorn's SIGTERM path skips atexit); its start starts the event-loop watchdog",
    undone="not undone: it belongs to the app; after shutdown() it finds no pipeline and only runs the app's own",
    applied_by="integrations/fastapi.instrument_app, per app",
)
CONTRIB_FLAG = Patch(
    "app._is_instrumented_by_opentelemetry (per app)",
    why="the contrib instrumentations' own flag: they leave the app alone, so a request has one server span",
    undone="not undone: the app keeps qm-otel's middleware, so the flag stays true",
    applied_by="integrations/fastapi.instrument_app, per app",
)

#: every change qm-otel makes to code or process state it does not own (the module documentation says each)
PATCHES = (EXECUTOR_CONTEXT, FASTAPI_CLASS, STARLETTE_CLASS, OUTBOUND_PROPAGATOR, COUNT_DROPPED, SIGTERM, AT_EXIT,
           ENVIRONMENT, SDK_LOG_LEVEL, ROOT_LOGGER, UVICORN_LOGGERS, URL_LOG_FILTERS, IMPORT_FINDER, MIDDLEWARE_STACK,
           LIFESPAN, CONTRIB_FLAG)
