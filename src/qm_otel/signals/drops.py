"""Telemetry dropped is counted (``qm_otel.telemetry.dropped``) and reported without a line per drop.

The SDK's batch processors drop an item when their queue is full and log "Queue full, dropping …"
each time, through a logger whose duplicate filter lets one line through every 20 seconds. qm-otel
puts a filter ahead of that one which counts every drop, by signal, in a metric; the line itself is
still reported as the SDK reports it (once per 20 s), and qm-otel's log handler writes it to stdout
without feeding it back into the full log queue.

A collector that refuses batches for good (a 4xx other than 408/429: a wrong path, missing
credentials, a request too large) has each refused batch dropped by the delivery, and
:class:`Refusals` reports it: one ERROR naming the endpoint, the status and the likely fix, then at
most one WARNING every :data:`REFUSED_SUMMARY_S` with what was dropped since (and one at shutdown
for what no line reported yet), and one INFO when a batch is accepted again. The ERROR and WARNING
lines go to stdout and files, never over OTLP (:data:`qm_otel.logs.handler.EXPORT_LOGGER`).
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers

from qm_otel.core import instruments
from qm_otel.core.sdk_internals import SDK_BATCH_LOGGER
from qm_otel.logs.handler import EXPORT_LOGGER

__all__ = ["REFUSED_SUMMARY_S", "SDK_BATCH_LOGGER", "Refusals", "count_dropped", "refusal_hint"]

_logger = logging.getLogger(EXPORT_LOGGER)
#: while a collector keeps refusing a signal's batches, at most one line per this many seconds says
#: what was dropped since the last; a new refusal after a quiet spell this long is reported in full again
REFUSED_SUMMARY_S = 60.0

_SIGNALS = {"span": "traces", "log": "logs"}


class _CountDrops(logging.Filter):
    """Counts each "Queue full, dropping …" record; lets every record on to the SDK's own filter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Queue full, dropping %s." and record.args:
            exporting = str(record.args[0] if isinstance(record.args, tuple) else record.args).lower()
            instruments.current().telemetry_dropped.add(1, {"signal": _SIGNALS.get(exporting, exporting),
                                                            "reason": "queue_full"})
        return True


def count_dropped() -> None:
    """Put the counting filter first on the SDK's batch-processor logger (once per process)."""
    logger = logging.getLogger(SDK_BATCH_LOGGER)
    if not any(isinstance(f, _CountDrops) for f in logger.filters):
        logger.filters.insert(0, _CountDrops())  # ahead of the SDK's duplicate filter, which drops repeats


class Refusals:
    """What one signal's collector refused for good, reported once and then summarised (module documentation).

    The lines, for a signal: an ERROR, with the likely fix, for a status not reported so before, or
    for refusals that come back after :data:`REFUSED_SUMMARY_S` or more without any; else a WARNING,
    at most one per :data:`REFUSED_SUMMARY_S`, with what was refused since the last line; an INFO
    when a batch is accepted after refusals one of those lines reported. A collector that accepts some
    batches and refuses others (a 413 for the large ones) gets at most a WARNING and an INFO a period. At
    shutdown, a WARNING says what was refused since the last line.
    Driven by the delivery's sender thread alone (no lock); the delivery counts the drops themselves.
    """

    def __init__(self, signal_name: str, endpoint: str) -> None:
        self.signal, self.endpoint = signal_name, endpoint
        self.refusing = False  # the last batch was refused
        self._since = 0.0  # when the current run of refusals began
        self._refused_at: float | None = None  # the last refusal
        self._announced = False  # a line reported the current run of refusals: its end is reported too
        self._statuses: set[int] = set()  # reported in full (an ERROR)
        self._line_at: float | None = None  # the last ERROR or WARNING
        self._batches = self._items = 0  # refused and not yet reported
        self._detail = ""

    def refused(self, now: float, status: int, detail: str, items: int, size: int) -> None:
        """A batch of ``items`` (``size`` bytes before compression) was refused with HTTP ``status``."""
        previous = self._refused_at if self._refused_at is not None else now
        back = not self.refusing and now - previous >= REFUSED_SUMMARY_S  # after a spell without refusals
        if not self.refusing:
            self.refusing, self._since, self._announced = True, now, False
        self._refused_at, self._detail = now, detail
        last = self._line_at if self._line_at is not None else now
        self._batches += 1
        self._items += items
        if status not in self._statuses or back:
            earlier = self._items - items
            self._report(now)
            self._statuses.add(status)
            _logger.error("qm-otel: the collector at %s refused a %s batch (%s); %d item(s) dropped%s. %s. Until it "
                          "accepts one, further refusals are summarised every %.0f s", self.endpoint, self.signal,
                          detail, items, f" ({earlier} more refused since the last report)" if earlier else "",
                          refusal_hint(status, self.signal, self.endpoint, size), REFUSED_SUMMARY_S)
        elif now - last >= REFUSED_SUMMARY_S:
            batches, dropped = self._batches, self._items
            self._report(now)
            _logger.warning("qm-otel: the collector at %s refused %d %s batch(es) in the last %.0f s (%s); %d item(s) "
                            "dropped", self.endpoint, batches, self.signal, now - last, detail, dropped)

    def closing(self, now: float) -> None:
        """The delivery stops: what was refused since the last line, if anything, in one WARNING."""
        if self._batches:
            batches, dropped = self._batches, self._items
            self._report(now)
            _logger.warning("qm-otel: the collector at %s refused %d %s batch(es) since the last report (%s); %d "
                            "item(s) dropped", self.endpoint, batches, self.signal, self._detail, dropped)

    def _report(self, now: float) -> None:
        self._line_at, self._announced = now, True
        self._batches = self._items = 0

    def accepted(self, now: float) -> None:
        """A batch was accepted: the end of a run of refusals, reported if a line reported the run."""
        if not self.refusing:
            return
        self.refusing = False
        if self._announced:
            dropped = self._items
            self._batches = self._items = 0
            _logger.info("qm-otel: the collector at %s accepts %s batches again, after %.1f s of refusals (%s); "
                         "%d item(s) dropped since the last report", self.endpoint, self.signal, now - self._since,
                         self._detail, dropped)


_SIGNAL_PATH = re.compile(r"/v1/(traces|metrics|logs)/?$")
_BATCH_SIZE = {"traces": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "logs": "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"}


def refusal_hint(status: int, signal_name: str, endpoint: str, size: int) -> str:
    """The likely fix for a collector that refuses ``signal_name``'s batches at ``endpoint`` with ``status``."""
    if status in (404, 405):
        return _path_hint(signal_name, endpoint)
    if status in (401, 403):
        return _credentials_hint(status, signal_name)
    if status == 413:
        smaller = (f"send smaller batches ({_BATCH_SIZE[signal_name]})" if signal_name in _BATCH_SIZE
                   else "export fewer series at a time")
        return (f"The request ({size} bytes before compression) is larger than the collector accepts: {smaller}, "
                "compress (OTEL_EXPORTER_OTLP_COMPRESSION=gzip) or raise the receiver's max_request_body_size")
    return ("The collector will not take this batch as it is (a 4xx other than 408 and 429 is not retried): its "
            "own log says why")


def _path_hint(signal_name: str, endpoint: str) -> str:
    """404 or 405: a per-signal URL without the signal's path, a signal path twice, or no receiver at the path."""
    own = f"/v1/{signal_name}"
    path = urlsplit(endpoint).path.rstrip("/")
    if not path.endswith(own):
        return (f"Nothing answers OTLP {signal_name} there: a per-signal endpoint "
                f"(OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT) is used as it is and must end in {own} "
                f"(e.g. {endpoint.rstrip('/')}{own})")
    doubled = _SIGNAL_PATH.search(path.removesuffix(own))
    if doubled is not None:
        return (f"The path has a signal path twice: the general endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or "
                f"exporter_endpoint) gets {own} appended, so it must not end in /v1/{doubled.group(1)} itself; "
                f"give the base URL, or set OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT to the full URL")
    return ("Nothing answers OTLP there: check the host and port (OTLP/HTTP is usually 4318, 4317 is gRPC) and "
            "any path prefix a gateway in front of the collector expects (OTEL_EXPORTER_OTLP_ENDPOINT="
            f"http://host:port/prefix sends to http://host:port/prefix{own})")


def _credentials_hint(status: int, signal_name: str) -> str:
    """401 or 403: the header to set (none is), or the headers to check (their names, never their values)."""
    asked = "asks for credentials" if status == 401 else "refuses the credentials sent"
    variable = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_HEADERS"
    source, names = _headers(variable)
    if not names:
        return (f"The collector {asked} and no header is configured: set the one it expects, e.g. "
                f"OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token> (or {variable} for {signal_name} only)")
    return f"The collector {asked}: check the headers set by {source} ({', '.join(names)}), their names and values"


def _headers(variable: str) -> tuple[str, list[str]]:
    """Where the exporter's headers come from (the signal's ``variable``, else the general one), and their names."""
    for name in (variable, "OTEL_EXPORTER_OTLP_HEADERS"):
        value = os.environ.get(name, "").strip()
        if value:  # read as the exporter reads it (names lower-cased, URL-decoded)
            return name, sorted(parse_env_headers(value, liberal=True))
    return "", []
