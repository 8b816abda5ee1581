"""The event API: one call, one execution-log record; ``timed`` adds a span and a duration metric.

>>> event("FAMILY", "close_month", duration_ms=42, month="2025-09")          # doctest: +SKIP
>>> with timed("CACHE", "warm"):                                              # doctest: +SKIP
...     warm_cache()

Components and statuses come from the conventions data (plus ``extra_components``); an unknown
one raises :class:`EventError` in development and is counted (and still written) elsewhere.
"""

from __future__ import annotations

import logging
import re
import time
from types import TracebackType
from typing import Any, Self

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from qm_otel.core import instruments
from qm_otel.core.config import SETTINGS
from qm_otel.core.conventions import conventions
from qm_otel.core.work_context import SyncAsyncContext

__all__ = ["EventError", "event", "timed"]

_logger = logging.getLogger("qm_otel.events")
_SNAKE = re.compile(r"[^0-9a-zA-Z]+")
#: LogRecord attributes an ``extra=`` key may not overwrite; such detail keys get a ``detail_`` prefix
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class EventError(ValueError):
    """An event names a component or status the conventions do not know."""


def _snake(text: str) -> str:
    return _SNAKE.sub("_", text).strip("_").lower()


def _settings() -> tuple[tuple[str, ...], bool]:
    """The application's extra components, and whether unknown names raise (development, or no setup())."""
    settings = SETTINGS.get()
    if settings is None:
        return (), True
    return settings.extra_components, settings.development


def _check(component: str, status: str) -> None:
    extra_components, strict = _settings()
    known = conventions()
    problems = []
    if component not in known.components and component not in extra_components:
        allowed = ", ".join((*known.components, *sorted(extra_components)))
        problems.append(("component", f"unknown component {component!r}; allowed: {allowed} "
                                      "(add your own with QM_OTEL_EXTRA_COMPONENTS)"))
    if status not in known.statuses:
        problems.append(("status", f"unknown status {status!r}; allowed: {', '.join(known.statuses)}"))
    if not problems:
        return
    if strict:
        raise EventError("; ".join(text for _, text in problems))
    for kind, _ in problems:
        instruments.current().events_invalid.add(1, {"kind": kind})


def event(
    component: str,
    action: str,
    status: str = "SUCCESS",
    duration_ms: float | None = None,
    *,
    message: str | None = None,
    event: str | None = None,
    logger: logging.Logger | None = None,
    exc_info: Any = None,
    level: str | None = None,
    **details: Any,
) -> None:
    """Write one execution-log record at the level ``status`` implies.

    Args:
        component: an upper-case component from the conventions (or ``extra_components``).
        action: what happened, e.g. ``START`` or ``close_month``.
        status: SUCCESS, FAILURE, DEGRADED, TIMEOUT, RETRY, SKIPPED or INFO.
        duration_ms: how long it took, if timed.
        message: the human text; default ``"<component> <action> <status>"``.
        event: the snake_case event name; default ``<component>_<action>`` in snake_case.
        logger: where to log; default ``qm_otel.events``.
        exc_info: as for ``logging``.
        level: override the level the status implies (e.g. a threshold band's level).
        details: extra fields (stdout JSON fields, OTLP attributes).

    Raises:
        EventError: in development, for an unknown component or status.

    """
    _check(component, status)
    level = level or conventions().statuses.get(status, "WARNING")
    fields: dict[str, Any] = {
        f"detail_{key}" if key in _RECORD_ATTRS else key: value for key, value in details.items()
    }
    fields.update(
        component=component,
        action=action,
        status=status,
        event=event or _snake(f"{component}_{action}"),
    )
    if duration_ms is not None:
        fields["duration_ms"] = round(duration_ms, 3)
    text = message or f"{component} {action} {status}"
    (logger or _logger).log(logging.getLevelName(level), text, extra=fields, exc_info=exc_info, stacklevel=2)


class timed(SyncAsyncContext):
    """Wrap work in a span, write its record with ``duration_ms`` and status, record its duration.

    Status: SUCCESS, TIMEOUT for ``TimeoutError`` (``asyncio.TimeoutError`` included), FAILURE
    with the exception for anything else; the exception is never swallowed. Works as a context
    manager (``with`` / ``async with``) and as a decorator of sync and async functions; one
    instance times one block at a time, the decorator makes a fresh one per call.
    """

    def __init__(self, component: str, action: str, **details: Any) -> None:
        self.component = component
        self.action = action
        self.details = details
        self._span: trace.Span | None = None
        self._scope: Any = None
        self._started = 0.0

    def __enter__(self) -> Self:
        tracer = trace.get_tracer("qm_otel.events")
        self._span = tracer.start_span(f"{self.component} {self.action}", attributes={
            "qm_otel.component": self.component, "qm_otel.action": self.action})
        # the exception is recorded once, below, not again by use_span
        self._scope = trace.use_span(self._span, end_on_exit=False, record_exception=False,
                                     set_status_on_exception=False)
        self._scope.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration_s = time.perf_counter() - self._started
        span = self._span
        try:
            if exc is None:
                status = "SUCCESS"
            else:
                status = "TIMEOUT" if isinstance(exc, TimeoutError) else "FAILURE"
                if span is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            if span is not None:
                span.set_attribute("qm_otel.status", status)
            event(self.component, self.action, status, duration_s * 1000.0,
                  exc_info=(exc_type, exc, tb) if exc is not None else None, **self.details)
            instruments.current().timed_duration.record(
                duration_s, {"component": self.component, "action": self.action, "status": status}
            )
        finally:
            if self._scope is not None:
                self._scope.__exit__(exc_type, exc, tb)
            if span is not None:
                span.end()

    def _for_call(self) -> timed:
        return timed(self.component, self.action, **self.details)  # a fresh instance per decorated call
