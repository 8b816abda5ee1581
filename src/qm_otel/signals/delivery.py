"""Delivery: encoded batches wait in a bounded buffer and one thread per signal sends them, with retries.

The SDK's OTLP/HTTP exporters send from the batch processor's own thread and retry there: with the
collector down, that thread sleeps in its backoff while the processor's queue overflows, each retry
logs a warning (about one a second), and a flush at shutdown waits out the whole retry schedule.
A :class:`Delivery` puts itself between the batch processor (or metric reader) and the SDK
exporter's HTTP client:

- ``export`` encodes the batch (qm-otel's encoder, the SDK's as the fallback) and appends the bytes
  to a buffer bounded in items and in bytes (``export_buffer_items``, ``export_buffer_mb``); the
  batch processor's thread never waits for the network. A batch that does not fit is dropped and
  counted (``qm_otel.telemetry.dropped``, ``reason="buffer_full"``).
- a sender thread posts the oldest payload once (the SDK client's request, headers, compression
  and TLS settings); a payload is removed only when the collector accepted it (2xx/3xx) or refused
  it for good (a 4xx other than 408/429: counted, ``reason="rejected"``, and reported by
  :class:`~qm_otel.signals.drops.Refusals`: one ERROR naming the likely fix, then at most a summary
  a minute, one INFO when a batch is accepted again). A connection error, a
  timeout, 408/429/502/503/504 keep it and the sender waits 1 s, 2 s, 4 s … up to 10 s (or what
  ``Retry-After`` asks) before it tries again. So an outage loses nothing that fits the buffer.
- one WARNING when sending starts failing, one INFO when it recovers, with the outage's length
  and the items dropped meanwhile — not one line per retry. These reports are written, never
  exported over OTLP: the export they report on may be the failing one. Nothing the sender thread
  logs is exported (:func:`~qm_otel.logs.handler.write_only_here`: at DEBUG, the HTTP client's line
  per request would otherwise make the next request), nor are the warnings and errors of
  :data:`~qm_otel.logs.handler.EXPORT_LOGGER` logged from other threads (the report at shutdown).
- ``flush`` waits until the buffer is empty, at most until its deadline, and not at all while
  the collector is failing; ``shutdown`` flushes within what is left of the shutdown budget and
  counts what could not be sent (``reason="shutdown"``).
- the sender thread starts with the first payload and makes the SDK exporter itself before its
  first send (an :class:`ExporterTarget` says how, with the settings read at ``setup()``), not
  at ``setup()``: its imports (``requests``, urllib3, the protobuf modules) would cost the
  service's start-up, and a process that never exports (a short script, telemetry that goes
  nowhere) never pays them. If it cannot be made, that is a failing send: kept, retried with
  backoff, reported once.

A forked child starts with an empty buffer, its own sender and, when it first sends, its own
SDK exporter (the parent's payloads and pooled connections are the parent's).

The pipeline owns its deliveries: ``setup()`` builds the exporters inside :func:`collecting`, and the
``Telemetry`` handle flushes, bounds and closes the ones made there; :meth:`Delivery.close` joins the
sender thread, so none outlives ``shutdown()`` (but one stuck in a send past the shutdown budget).
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from opentelemetry.context import attach, set_value
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.metrics.view import Aggregation
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from qm_otel.core import instruments
from qm_otel.core import sdk_internals as sdk
from qm_otel.logs.handler import EXPORT_LOGGER, write_only_here
from qm_otel.signals.drops import Refusals

__all__ = ["Delivery", "ExporterTarget", "LogDelivery", "MetricDelivery", "SpanDelivery", "collecting",
           "deliverable"]

_logger = logging.getLogger(EXPORT_LOGGER)
_RETRY_FIRST_S, _RETRY_MAX_S, _JITTER = 1.0, 10.0, 0.2
_RETRYABLE = frozenset({408, 429, 502, 503, 504})
#: the list the pipeline being built collects its deliveries in (:func:`collecting`)
_COLLECTING: contextvars.ContextVar[list[Delivery] | None] = contextvars.ContextVar("qm_otel_deliveries",
                                                                                     default=None)
#: every delivery alive, for the fork hook only: ``os.register_at_fork`` has no way to unregister, so the
#: hook is registered once per process, with the first delivery; the set is weak, so it keeps none alive
_EVERY: weakref.WeakSet[Delivery] = weakref.WeakSet()
_AT_FORK: list[bool] = []  # whether the fork hook is registered


@contextlib.contextmanager
def collecting() -> Iterator[list[Delivery]]:
    """Every :class:`Delivery` made in the block (in this context) is appended to the list it yields.

    ``setup()`` builds the exporters inside it: the list is what its ``Telemetry`` handle owns.
    """
    made: list[Delivery] = []
    token = _COLLECTING.set(made)
    try:
        yield made
    finally:
        _COLLECTING.reset(token)


def deliverable(exporter: Any) -> bool:
    """Whether ``exporter`` is an SDK OTLP/HTTP exporter whose client this module knows how to drive."""
    return sdk.http_client(exporter) is not None


class ExporterTarget(NamedTuple):
    """What a :class:`Delivery` needs to make its SDK exporter when it first sends, and knows before."""

    #: makes the SDK OTLP/HTTP exporter, its settings already resolved (imports ``requests`` and the rest)
    build: Callable[[], Any]
    #: the URL the exporter posts to (for the log lines)
    endpoint: str
    #: the exporter's limit on one request, in bytes before compression (0: none)
    max_request_size: int


class Delivery:
    """The buffer and sender of one signal (see the module's documentation)."""

    def __init__(
        self,
        target: ExporterTarget,
        signal_name: str,
        encode: Callable[[Any], tuple[bytes, int]],
        *,
        max_items: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self.endpoint = target.endpoint
        self.signal = signal_name
        self._encode = encode
        self.max_items, self.max_bytes = max_items, max_bytes
        self._max_request = max(0, int(target.max_request_size))
        self._clock = clock
        #: when the process's shutdown must be over (monotonic clock); set by the handle at shutdown
        self.deadline: float | None = None
        self._init_state(closed=False)
        collected = _COLLECTING.get()
        if collected is not None:
            collected.append(self)
        _EVERY.add(self)
        if not _AT_FORK and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork)
            _AT_FORK.append(True)

    def _init_state(self, *, closed: bool) -> None:
        # new locks too: after fork, the parent's could be held by a thread the child does not have
        self._cond = threading.Condition()
        self._built_lock = threading.Lock()
        self._exporter: Any = None  # made on the first send (a forked child makes its own)
        self._buffer: deque[_Payload] = deque()
        self._items = self._bytes = 0
        self._sending = False
        self._closed = closed
        self._failing_since: float | None = None
        self._failure = ""
        self._dropped_while_failing = 0
        self._refusals = Refusals(self.signal, self.endpoint)
        self._retry_at = 0.0
        self._backoff_s = _RETRY_FIRST_S
        self._attempts = 0  # sends finished, whatever their outcome
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None  # started with the first payload

    # --- the producer side (the batch processor's or metric reader's thread) --------------------

    def _forked(self) -> None:
        """In a forked child, start over: the parent's buffer, locks, sender and exporter are the parent's.

        Done for every delivery right after ``os.fork()`` (:func:`_after_fork`); checked again here
        for a child made another way.
        """
        if self._pid != os.getpid():
            self._init_state(closed=self._closed)

    def _accept(self, batch: Any) -> bool:
        """Encode and buffer ``batch``; False when it was dropped."""
        self._forked()
        if self._closed:
            return False
        payload, items = self._encode(batch)
        if items == 0:
            return True
        if self._max_request and len(payload) > self._max_request:
            self._drop(items, "too_large")
            _logger.error("qm-otel: a %s batch of %d bytes is over the exporter's request limit of %d bytes; "
                          "dropped", self.signal, len(payload), self._max_request)
            return False
        with self._cond:
            if self._items + items > self.max_items or self._bytes + len(payload) > self.max_bytes:
                full = True
            else:
                full = False
                self._buffer.append(_Payload(payload, items, delayed=self._failing_since is not None))
                self._items += items
                self._bytes += len(payload)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=f"qm-otel-send-{self.signal}", daemon=True)
                    self._thread.start()
                self._cond.notify_all()
        if full:
            self._drop(items, "buffer_full")
            return False
        return True

    def _drop(self, items: int, reason: str) -> None:
        if self._failing_since is not None:
            self._dropped_while_failing += items
        instruments.current().telemetry_dropped.add(items, {"signal": self.signal, "reason": reason})

    # --- the sender thread -----------------------------------------------------------------------

    def _run(self) -> None:
        attach(set_value(sdk.SUPPRESS_INSTRUMENTATION_KEY, True))  # our own HTTP calls are not traced
        write_only_here()  # nor is what this thread logs exported (its reports, the HTTP client's DEBUG lines)
        while True:
            with self._cond:
                while not self._closed and (not self._buffer or self._clock() < self._retry_at):
                    wait = max(0.0, self._retry_at - self._clock()) if self._buffer else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                head = self._buffer[0]
                self._sending = True
            outcome, detail, retry_after, status = self._send(head.data)
            if self._closed:  # closed while sending: what is left was counted by close()
                return
            self._settle(head, outcome, detail, retry_after, status)

    def exporter(self) -> Any:
        """The SDK exporter, made now if it was not yet (None once closed without one).

        Raises:
            TypeError: the exporter has no HTTP client this module knows how to drive.

        """
        self._forked()
        with self._built_lock:
            if self._exporter is None and not self._closed:
                made = self._target.build()
                if not deliverable(made):
                    made.shutdown()
                    message = f"the SDK's {type(made).__name__} has no HTTP client qm-otel knows how to drive"
                    sdk.fell_back("delivery", message)
                    raise TypeError(message)
                self._max_request = sdk.exporter_max_request_size(made, self._max_request)
                self._exporter = made
            return self._exporter

    @property
    def sdk_client(self) -> Any:
        """The SDK exporter's HTTP client, for inspection (the exporter is made if it was not yet)."""
        try:
            return sdk.http_client(self.exporter())
        except Exception:
            return None

    def _send(self, payload: bytes) -> tuple[str, str, float | None, int | None]:
        """One POST: ``("sent" | "retry" | "rejected", what happened, Retry-After seconds, HTTP status)``."""
        try:
            client = sdk.http_client(self.exporter())
        except Exception as exc:  # the exporter could not be made: kept and tried again, as a failed send is
            return "retry", f"the OTLP exporter could not be made ({type(exc).__name__}: {exc})", None, None
        try:
            result = sdk.post(client, payload)
        except Exception as exc:  # a transport that raises instead of returning an error
            return "retry", f"{type(exc).__name__}: {exc}", None, None
        code = result.status_code
        if code is not None and 200 <= code < 400:
            return "sent", "", None, code
        if code is None:
            return "retry", f"{type(result.error).__name__}: {result.error}", None, None
        detail = f"HTTP {code} {result.reason or ''}".strip()
        if code in _RETRYABLE:
            return "retry", detail, _retry_after(result), code
        return "rejected", detail, None, code

    def _settle(
        self, head: _Payload, outcome: str, detail: str, retry_after: float | None, status: int | None
    ) -> None:
        now = self._clock()
        recovered: tuple[float, int] | None = None
        started_failing = False
        with self._cond:
            self._sending = False
            self._attempts += 1
            if outcome != "retry" and self._buffer and self._buffer[0] is head:
                self._buffer.popleft()
                self._items -= head.items
                self._bytes -= len(head.data)
            elif outcome == "retry":
                for waiting in self._buffer:  # everything buffered is now late
                    waiting.delayed = True
            if outcome == "retry":
                started_failing = self._failing_since is None
                if started_failing:
                    self._failing_since, self._dropped_while_failing = now, 0
                self._failure = detail
                delay = retry_after if retry_after is not None else self._backoff_s
                jitter = random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - spreading retries, not secrets
                self._retry_at = now + min(delay, _RETRY_MAX_S * 6) * jitter
                self._backoff_s = min(self._backoff_s * 2, _RETRY_MAX_S)
            else:
                if self._failing_since is not None:
                    recovered = (now - self._failing_since, self._dropped_while_failing)
                    self._failing_since = None
                self._retry_at, self._backoff_s = 0.0, _RETRY_FIRST_S
            buffered = self._items
            self._cond.notify_all()
        if outcome == "sent" and head.delayed:
            instruments.current().telemetry_retried.add(head.items, {"signal": self.signal})
        if started_failing:
            _logger.warning("qm-otel: %s export to %s is failing (%s); keeping up to %d items / %.0f MB and "
                            "retrying with backoff (%d buffered)", self.signal, self.endpoint, detail,
                            self.max_items, self.max_bytes / 1e6, buffered)
        if recovered is not None:
            self._recovered(outcome, *recovered)
        if outcome == "rejected":
            self._drop(head.items, "rejected")
            self._refusals.refused(now, status or 0, detail, head.items, len(head.data))
        elif outcome == "sent":
            self._refusals.accepted(now)

    def _recovered(self, outcome: str, outage_s: float, dropped: int) -> None:
        """The end of an outage: a batch accepted, or refused (the collector answers, but that is no recovery)."""
        if outcome == "sent":
            _logger.info("qm-otel: %s export to %s recovered after %.1f s; %d item(s) were dropped meanwhile",
                         self.signal, self.endpoint, outage_s, dropped)
        else:
            _logger.warning("qm-otel: %s export to %s: the collector answers again after %.1f s but refuses what "
                            "it is sent; %d item(s) were dropped meanwhile", self.signal, self.endpoint, outage_s,
                            dropped)

    # --- flush and shutdown ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    @property
    def failing(self) -> bool:
        """Whether the last send failed (the collector is down, black-holed or overloaded)."""
        return self._failing_since is not None

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Send what is buffered within the shutdown budget, then stop (the exporters' protocol)."""
        del kwargs
        self.close(self.budget_s(timeout_millis / 1000))

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        """Wait for the buffer to empty, not while the collector is failing (the exporters' protocol)."""
        return self.flush(timeout_millis / 1000)

    def budget_s(self, timeout_s: float) -> float:
        """``timeout_s``, cut to what is left before :attr:`deadline` (the process's shutdown budget)."""
        if self.deadline is None:
            return timeout_s
        return max(0.0, min(timeout_s, self.deadline - self._clock()))

    def pending(self) -> int:
        """Items buffered or being sent."""
        self._forked()
        return self._items

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything buffered is sent, at most ``timeout_s``.

        While the collector is failing, one attempt is made at once (not at the backoff's time) and,
        if it fails too, the flush gives up without waiting further.
        """
        self._forked()
        deadline = self._clock() + max(0.0, timeout_s)
        with self._cond:
            asked: int | None = None  # the attempt count when this flush asked for an attempt now
            tried = False
            while self._buffer and not self._closed:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                if asked is not None and self._attempts != asked:
                    asked = None  # the attempt asked for is over
                if self._failing_since is not None and asked is None:
                    if tried:
                        break  # the attempt made now failed too: do not wait out the backoff
                    tried, asked = True, self._attempts
                    self._retry_at = 0.0
                    self._cond.notify_all()
                self._cond.wait(remaining)
            return not self._buffer

    def close(self, timeout_s: float) -> bool:
        """Flush within ``timeout_s``, stop the sender and count what is left as dropped.

        The sender thread is joined within what is left of ``timeout_s`` (a send in progress ends first).
        """
        join_by = time.monotonic() + max(0.0, timeout_s)  # real time: the test clocks do not move a thread
        flushed = self.flush(timeout_s)
        self._refusals.closing(self._clock())
        with self._cond:
            self._closed = True
            left = self._items
            self._buffer.clear()
            self._items = self._bytes = 0
            sender = self._thread
            self._cond.notify_all()
        if sender is not None and sender is not threading.current_thread():
            sender.join(max(0.0, join_by - time.monotonic()))
        if left:
            self._drop(left, "shutdown")
            _logger.warning("qm-otel: %d %s item(s) could not be sent to %s before shutdown (%s)", left,
                            self.signal, self.endpoint, self._failure or "timeout")
        with self._built_lock:  # a send that is making the exporter finishes first; none is made after
            exporter = self._exporter
        if exporter is not None:
            exporter.shutdown()
        return flushed


def _after_fork() -> None:
    """In the child, right after ``os.fork()``: every delivery starts over (see :meth:`Delivery._forked`)."""
    for delivery in list(_EVERY):
        delivery._forked()


class _Payload:
    """One encoded batch in the buffer; ``delayed`` once a failure held it back."""

    __slots__ = ("data", "delayed", "items")

    def __init__(self, data: bytes, items: int, *, delayed: bool = False) -> None:
        self.data, self.items, self.delayed = data, items, delayed


def _retry_after(result: Any) -> float | None:
    """The ``Retry-After`` header in seconds (a number or an HTTP date), if the response has one."""
    try:
        value = result.headers().get("retry-after")
    except Exception:  # a transport without headers
        return None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class SpanDelivery(Delivery, SpanExporter):
    """A span exporter that buffers and sends through :class:`Delivery`."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        """Buffer the batch for the sender (FAILURE only when it was dropped)."""
        return SpanExportResult.SUCCESS if self._accept(spans) else SpanExportResult.FAILURE


class LogDelivery(Delivery, LogRecordExporter):
    """A log record exporter that buffers and sends through :class:`Delivery`."""

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        """Buffer the batch for the sender (FAILURE only when it was dropped)."""
        return LogRecordExportResult.SUCCESS if self._accept(batch) else LogRecordExportResult.FAILURE


class MetricDelivery(Delivery, MetricExporter):
    """A metric exporter that buffers and sends through :class:`Delivery` (the SDK exporter's temporality)."""

    def __init__(
        self,
        target: ExporterTarget,
        signal_name: str,
        encode: Callable[[Any], tuple[bytes, int]],
        *,
        preferred_temporality: dict[type, AggregationTemporality],
        preferred_aggregation: dict[type, Aggregation],
        **limits: Any,
    ) -> None:
        MetricExporter.__init__(self, preferred_temporality=preferred_temporality,
                                preferred_aggregation=preferred_aggregation)
        Delivery.__init__(self, target, signal_name, encode, **limits)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Buffer the points for the sender (FAILURE only when they were dropped)."""
        del timeout_millis, kwargs
        return MetricExportResult.SUCCESS if self._accept(metrics_data) else MetricExportResult.FAILURE
