"""A small Loki query client (LogQL over Loki's HTTP API, on httpx) for ``qm-otel logs``.

>>> with LokiClient("http://127.0.0.1:3100") as loki:                      # doctest: +SKIP
...     lines = loki.correlation_lines("order-1001", since="1h")
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from qm_otel.core.correlation import parse, trace_id_for

__all__ = ["LogLine", "LokiClient", "LokiError", "correlation_query", "print_correlation_logs", "tempo_link"]


class LokiError(RuntimeError):
    """Loki could not be reached or answered with an error; the message says which."""


@dataclass(frozen=True)
class LogLine:
    """One log line: its time, text, stream labels and structured metadata."""

    timestamp_ns: int
    line: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def time(self) -> str:
        """ISO 8601 UTC with milliseconds."""
        moment = datetime.fromtimestamp(self.timestamp_ns / 1e9, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def correlation_query(correlation_id: str) -> str:
    """The LogQL for every line of a correlation ID: by ``correlation_id``, or by the trace ID it maps to.

    Raises:
        LokiError: for an ID qm-otel would reject (nothing to search for; never put into a query).

    """
    if parse(correlation_id) is None:
        message = "that is not a valid correlation ID (1-128 characters of A-Z a-z 0-9 . _ : -)"
        raise LokiError(message)
    trace_id = format(trace_id_for(correlation_id), "032x")
    return f'{{service_name=~".+"}} | correlation_id="{correlation_id}" or trace_id="{trace_id}"'


class LokiClient:
    """Queries Loki's ``/loki/api/v1/query_range`` and decodes its ``streams`` answer."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def __enter__(self) -> LokiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    def query_range(self, query: str, *, since: str = "24h", limit: int = 500) -> list[LogLine]:
        """Run a LogQL log query over the last ``since``; lines oldest first."""
        params = {"query": query, "since": since, "limit": str(limit), "direction": "forward"}
        headers = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}
        try:
            response = self._client.get("/loki/api/v1/query_range", params=params, headers=headers)
        except httpx.HTTPError as exc:
            message = f"Loki at {self.base_url} did not answer ({type(exc).__name__}: {exc})"
            raise LokiError(message) from exc
        if response.status_code != 200:
            message = f"Loki at {self.base_url} answered HTTP {response.status_code}: {response.text.strip()[:200]}"
            raise LokiError(message)
        try:
            payload = response.json()
        except json.JSONDecodeError as exc:
            message = f"Loki at {self.base_url} answered something that is not JSON"
            raise LokiError(message) from exc
        return sorted(_lines(payload), key=lambda line: line.timestamp_ns)

    def correlation_lines(self, correlation_id: str, *, since: str = "24h", limit: int = 500) -> list[LogLine]:
        """Every line of one correlation ID."""
        return self.query_range(correlation_query(correlation_id), since=since, limit=limit)


def _lines(payload: Any) -> Iterator[LogLine]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or payload.get("status") != "success" or data.get("resultType") != "streams":
        message = f"unexpected Loki answer: {json.dumps(payload)[:200]}"
        raise LokiError(message)
    for stream in data.get("result", []):
        labels = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
        for value in stream.get("values", []):
            extra: dict[str, str] = {}
            if len(value) > 2 and isinstance(value[2], dict):  # categorize-labels: metadata apart
                for group in ("structuredMetadata", "parsed"):
                    extra.update({str(k): str(v) for k, v in (value[2].get(group) or {}).items()})
            yield LogLine(int(value[0]), str(value[1]), {**labels, **extra})


def tempo_link(grafana: str, trace_id: str) -> str:
    """A Grafana Explore link that opens ``trace_id`` in the Tempo datasource (uid ``tempo``)."""
    panes = {"t": {"datasource": "tempo", "queries": [
        {"refId": "A", "datasource": {"type": "tempo", "uid": "tempo"}, "queryType": "traceql", "query": trace_id}],
        "range": {"from": "now-7d", "to": "now"}}}
    return f"{grafana.rstrip('/')}/explore?schemaVersion=1&panes={urllib.parse.quote(json.dumps(panes))}"


def print_correlation_logs(client: LokiClient, correlation_id: str, *, since: str, limit: int, grafana: str) -> int:
    """Print a correlation ID's lines and the trace link; exit status 0 if any line was found, else 1."""
    lines = client.correlation_lines(correlation_id, since=since, limit=limit)
    trace_id = format(trace_id_for(correlation_id), "032x")
    print(f"correlation ID {correlation_id} → trace ID {trace_id}")
    print(f"trace in Tempo: {tempo_link(grafana, trace_id)}")
    for line in lines:
        level = line.labels.get("severity_text", line.labels.get("detected_level", ""))
        service = line.labels.get("service_name", "")
        print(f"{line.time}  {level:<5}  {service:<16}  {line.line}")
    if not lines:
        print(f"no log lines for {correlation_id} in the last {since}")
    return 0 if lines else 1
