"""The stack's links between signals, checked end to end (``scripts/verify-stack``).

One request with a known correlation ID (a UUID: qm-otel makes it the trace ID), then each link
Grafana offers, run the way the provisioned datasources run it:

- the trace, from Tempo (``/api/v2/traces/<id>``);
- Tempo → Loki: the Tempo datasource's ``tracesToLogsV2`` query, read from
  ``datasources.yaml`` and interpolated as Grafana does, against ``/loki/api/v1/query_range``
  over the span's time range shifted by ``spanStartTimeShift`` / ``spanEndTimeShift``;
- Loki → Tempo: the Loki datasource's derived field (``matcherType: label``) must find the trace
  ID on those records;
- Prometheus → Tempo: an exemplar on the duration histogram (``/api/v1/query_exemplars``) under a
  label named in ``exemplarTraceIdDestinations``, pointing at a trace Tempo returns.

>>> links = load_links(Path("dashboards/provisioning/datasources/datasources.yaml"))  # doctest: +SKIP
>>> logs_query(links, trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
...            tags={"service.name": "qm-demo"})                                       # doctest: +SKIP
'{service_name="qm-demo"} | trace_id="0af7651916cd43dd8448eb211c80319c"'

``python -m qm_otel.cli.links --dry-run`` prints the queries without sending anything.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from qm_otel.core.correlation import trace_id_for

__all__ = ["LinkBroken", "Links", "Span", "StackLinks", "exemplar_query", "load_links", "logs_query", "main",
           "trace_spans"]

DATASOURCES = Path("dashboards/provisioning/datasources/datasources.yaml")
#: the request histogram's bucket series (the OTLP receiver's name for http.server.request.duration)
DURATION_BUCKETS = "http_server_request_duration_seconds_bucket"
#: Grafana's template-variable pattern (public/app/features/variables/utils.ts, ``variableRegex``)
GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_PATH_PART = re.compile(r"""[^.[\]]+|\[(?:"([^"]*)"|'([^']*)'|([^\]]*))\]""")
_SHIFT = re.compile(r"^(-?)(\d+)(ms|s|m|h|d|w)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class LinkBroken(RuntimeError):
    """One link between signals does not work; ``link`` names it, the message says what was seen."""

    def __init__(self, link: str, detail: str) -> None:
        super().__init__(f"{link}: {detail}")
        self.link = link


@dataclass(frozen=True)
class Links:
    """What the provisioned datasources link with (``$$`` already unescaped, as Grafana's provisioning does)."""

    logs_query: str
    start_shift_s: float
    end_shift_s: float
    log_trace_field: str
    exemplar_labels: tuple[str, ...]


@dataclass(frozen=True)
class Span:
    """One span of a Tempo answer: IDs in hex, times in ns, resource and span attributes as Grafana's tags."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    tags: dict[str, str] = field(default_factory=dict)


def _unescape(value: str, where: str) -> str:
    """Grafana's provisioning reading of a value: ``$$`` is a literal ``$``; any other ``$`` names an env var."""
    parts = value.split("$$")
    if any("$" in part for part in parts):
        message = f"{where} has a single '$' (Grafana expands it as an environment variable): {value!r}"
        raise ValueError(message)
    return "$".join(parts)


def _shift_s(value: str | None) -> float:
    if not value:
        return 0.0
    match = _SHIFT.match(value.strip())
    if match is None:
        message = f"time shift {value!r} is not a Grafana interval such as -5m"
        raise ValueError(message)
    sign = -1 if match.group(1) else 1
    return sign * int(match.group(2)) * _SECONDS[match.group(3)]


def load_links(path: Path) -> Links:
    """The links the provisioned datasources define, as Grafana reads them."""
    sources = {d["uid"]: d.get("jsonData", {}) for d in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]}
    to_logs = sources["tempo"]["tracesToLogsV2"]
    if not to_logs.get("customQuery") or not to_logs.get("query"):
        message = f"{path}: the Tempo datasource's tracesToLogsV2 has no custom query (Grafana's default would run)"
        raise ValueError(message)
    derived = next(d for d in sources["loki"]["derivedFields"] if d.get("datasourceUid") == "tempo")
    return Links(
        logs_query=_unescape(to_logs["query"], "tracesToLogsV2.query"),
        start_shift_s=_shift_s(to_logs.get("spanStartTimeShift")),
        end_shift_s=_shift_s(to_logs.get("spanEndTimeShift")),
        log_trace_field=derived["matcherRegex"] if derived.get("matcherType") == "label" else "",
        exemplar_labels=tuple(d["name"] for d in sources["prometheus"]["exemplarTraceIdDestinations"]
                              if d.get("datasourceUid") == "tempo"),
    )


def _field_path(path: str) -> list[str]:
    """Lodash's path parsing, as Grafana's ``getFieldAccessor`` uses it: ``tags["service.name"]`` → two keys."""
    return [next((g for g in m.groups() if g is not None), m.group(0)) for m in _PATH_PART.finditer(path)]


def interpolate(template: str, scoped: Mapping[str, Any]) -> str:
    """Replace Grafana variables in ``template`` from ``scoped``; an undefined one raises (Grafana hides the link)."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        found: Any = scoped.get(name)
        for key in _field_path(match.group(5) or ""):
            found = found.get(key) if isinstance(found, Mapping) else None
        if found is None:
            message = f"variable {match.group(0)} is undefined for this span"
            raise KeyError(message)
        return str(found)
    return GRAFANA_VARIABLE.sub(value, template)


def span_variables(trace_id: str, span_id: str, tags: Mapping[str, str], *, name: str = "",
                   duration_ms: float = 0.0) -> dict[str, Any]:
    """``__span`` and ``__trace`` as Grafana's ``scopedVarsFromSpan`` / ``scopedVarsFromTrace`` build them."""
    return {"__span": {"spanId": span_id, "traceId": trace_id, "duration": duration_ms, "name": name,
                       "tags": dict(tags)},
            "__trace": {"traceId": trace_id, "duration": duration_ms, "name": name}}


def logs_query(links: Links, *, trace_id: str, span_id: str, tags: Mapping[str, str]) -> str:
    """The LogQL the Tempo → Loki link runs for this span."""
    return interpolate(links.logs_query, span_variables(trace_id, span_id, tags))


def exemplar_query(service_name: str) -> str:
    """The selector whose exemplars the latency panels show for one service."""
    return f'{DURATION_BUCKETS}{{service_name="{service_name}"}}'


def _hex_id(value: Any, size: int) -> str:
    """A span/trace ID from OTLP JSON: hex (the OTLP spec) or base64 (Tempo's gogo/jsonpb bytes)."""
    text = str(value or "")
    if re.fullmatch(f"[0-9a-fA-F]{{{2 * size}}}", text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.hex() if len(raw) == size else ""


def _attributes(items: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items or []:
        value = item.get("value") or {}
        for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
            if kind in value:
                tags[str(item.get("key"))] = str(value[kind]).lower() if kind == "boolValue" else str(value[kind])
                break
    return tags


def trace_spans(payload: Any) -> list[Span]:
    """The spans of a Tempo trace-by-ID answer (v2: ``trace.resourceSpans``; v1: ``batches``)."""
    root = payload.get("trace", payload) if isinstance(payload, dict) else None
    resources = (root.get("resourceSpans") or root.get("batches") or []) if isinstance(root, dict) else []
    spans = []
    for resource in resources:
        process = _attributes((resource.get("resource") or {}).get("attributes"))
        for scope in resource.get("scopeSpans", resource.get("instrumentationLibrarySpans", [])):
            for span in scope.get("spans", []):
                spans.append(Span(
                    trace_id=_hex_id(span.get("traceId"), 16), span_id=_hex_id(span.get("spanId"), 8),
                    parent_span_id=_hex_id(span.get("parentSpanId"), 8), name=str(span.get("name", "")),
                    start_ns=int(span.get("startTimeUnixNano", 0)), end_ns=int(span.get("endTimeUnixNano", 0)),
                    tags={**process, **_attributes(span.get("attributes"))}))
    return spans


def _loki_records(payload: Any) -> list[dict[str, str]]:
    """Each record's stream labels, structured metadata and parsed fields in one map (as Grafana's ``labels``)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or data.get("resultType") != "streams":
        message = f"not a Loki streams answer: {str(payload)[:200]}"
        raise ValueError(message)
    records = []
    for stream in data.get("result", []):
        for value in stream.get("values", []):
            fields = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
            if len(value) > 2 and isinstance(value[2], dict):  # categorize-labels: metadata apart
                for group in ("structuredMetadata", "parsed"):
                    fields.update({str(k): str(v) for k, v in (value[2].get(group) or {}).items()})
            records.append(fields)
    return records


class StackLinks:
    """Runs the checks against the stack's published endpoints; every wait is bounded by ``timeout_s``."""

    def __init__(self, links: Links, client: httpx.Client, *, demo: str, tempo: str, loki: str, prometheus: str,
                 timeout_s: float = 90.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.links, self.client, self.timeout_s, self.sleep, self.clock = links, client, timeout_s, sleep, clock
        self.demo, self.tempo, self.loki, self.prometheus = (u.rstrip("/") for u in (demo, tempo, loki, prometheus))

    def _until(self, link: str, attempt: Callable[[], Any]) -> Any:
        """``attempt()`` until it returns something truthy or the time is up (then its last complaint)."""
        deadline, last = self.clock() + self.timeout_s, "no answer"
        while True:
            try:
                result = attempt()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                result, last = None, f"{type(exc).__name__}: {exc}"
            if result:
                return result
            if self.clock() >= deadline:
                raise LinkBroken(link, f"nothing after {self.timeout_s:.0f} s ({last})")
            self.sleep(2.0)

    def request(self, correlation_id: str) -> str:
        """One demo request carrying ``correlation_id``; the trace ID qm-otel derives from it."""
        response = self.client.get(f"{self.demo}/items/1", headers={"X-Correlation-ID": correlation_id})
        if response.status_code != 200 or response.headers.get("x-correlation-id") != correlation_id:
            raise LinkBroken("demo request", f"HTTP {response.status_code}, X-Correlation-ID "
                                             f"{response.headers.get('x-correlation-id')!r} (sent {correlation_id})")
        return format(trace_id_for(correlation_id), "032x")

    def trace(self, trace_id: str, link: str = "trace in Tempo") -> list[Span]:
        """The trace's spans from Tempo (``/api/v2/traces/<id>``), waiting for them to arrive."""
        def attempt() -> list[Span]:
            response = self.client.get(f"{self.tempo}/api/v2/traces/{trace_id}")
            return [s for s in trace_spans(response.json()) if s.trace_id == trace_id] \
                if response.status_code == 200 else []
        return list(self._until(f"{link} ({self.tempo}/api/v2/traces/{trace_id})", attempt))

    def logs(self, span: Span) -> tuple[str, list[dict[str, str]]]:
        """Tempo → Loki: the datasource's query for ``span``, over its shifted time range."""
        query = logs_query(self.links, trace_id=span.trace_id, span_id=span.span_id, tags=span.tags)
        params = {"query": query, "start": str(span.start_ns + int(self.links.start_shift_s * 1e9)),
                  "end": str(span.end_ns + int(self.links.end_shift_s * 1e9)), "limit": "100",
                  "direction": "forward"}

        def attempt() -> list[dict[str, str]]:
            response = self.client.get(f"{self.loki}/loki/api/v1/query_range", params=params,
                                       headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"})
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code} {response.text.strip()[:200]}")
            return _loki_records(response.json())
        return query, list(self._until(f"Tempo → Loki (query {query})", attempt))

    def log_to_trace(self, records: list[dict[str, str]], trace_id: str) -> None:
        """Loki → Tempo: the derived field (a label matcher: the first key its regex finds) yields the trace ID."""
        link = f"Loki → Tempo (derived field on {self.links.log_trace_field or 'nothing'})"
        if not self.links.log_trace_field:
            raise LinkBroken(link, "the Loki datasource has no label-matcher derived field to Tempo")
        pattern = re.compile(self.links.log_trace_field)
        for record in records:
            key = next((k for k in record if pattern.search(k)), None)
            if key is None or record[key] != trace_id:
                raise LinkBroken(link, f"a record of trace {trace_id} gives {key}={record.get(key or '')!r}")

    def exemplar(self, service_name: str, trace_id: str, since_s: float) -> str:
        """Prometheus → Tempo: an exemplar trace ID (this request's if kept) on the duration histogram."""
        query, labels = exemplar_query(service_name), self.links.exemplar_labels

        def attempt() -> list[str]:
            now = self.clock()
            response = self.client.get(f"{self.prometheus}/api/v1/query_exemplars",
                                       params={"query": query, "start": f"{since_s:.3f}", "end": f"{now:.3f}"})
            payload = response.json()
            if payload.get("status") != "success":
                raise ValueError(f"HTTP {response.status_code} {str(payload)[:200]}")
            return [ex["labels"][name] for series in payload.get("data") or [] for ex in series.get("exemplars", [])
                    for name in labels if name in ex.get("labels", {})]
        found = self._until(f"Prometheus → Tempo (exemplars of {query} labelled {'/'.join(labels)})", attempt)
        return trace_id if trace_id in found else str(found[-1])

    def run(self, correlation_id: str, out: Callable[[str], None] = print) -> None:
        """Every link, in order; the first broken one raises ``LinkBroken``."""
        since = self.clock() - 60
        trace_id = self.request(correlation_id)
        out(f"ok    request      correlation ID {correlation_id} → trace ID {trace_id}")
        spans = self.trace(trace_id)
        root = next((s for s in spans if not s.parent_span_id), spans[0])
        out(f"ok    Tempo        {len(spans)} spans, root {root.name!r} of {root.tags.get('service.name')}")
        query, records = self.logs(root)
        out(f"ok    Tempo → Loki {len(records)} records via {query}")
        self.log_to_trace(records, trace_id)
        out(f"ok    Loki → Tempo every record's {self.links.log_trace_field} is {trace_id}")
        exemplar = self.exemplar(root.tags.get("service.name", ""), trace_id, since)
        self.trace(exemplar, link="Prometheus → Tempo: the exemplar's trace")
        which = "this request's" if exemplar == trace_id else "another request's"
        out(f"ok    Prometheus → Tempo exemplar {exemplar} ({which}) opens in Tempo")


def dry_run(links: Links, correlation_id: str, service_name: str, out: Callable[[str], None] = print) -> None:
    """What ``run`` would send, without sending anything."""
    trace_id = format(trace_id_for(correlation_id), "032x")
    out(f"request       GET /items/1  X-Correlation-ID: {correlation_id}  (trace ID {trace_id})")
    out(f"tempo         GET /api/v2/traces/{trace_id}")
    out("loki          GET /loki/api/v1/query_range  query="
        + logs_query(links, trace_id=trace_id, span_id="<root span>", tags={"service.name": service_name})
        + f"  range=span {links.start_shift_s:+.0f}s .. {links.end_shift_s:+.0f}s")
    out(f"loki → tempo  derived field: the label matching {links.log_trace_field!r}")
    out(f"prometheus    GET /api/v1/query_exemplars  query={exemplar_query(service_name)}"
        f"  labels {', '.join(links.exemplar_labels)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qm_otel.cli.links``: exit 0 when every link works, 1 naming the broken one."""
    parser = argparse.ArgumentParser(prog="python -m qm_otel.cli.links", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasources", type=Path, default=DATASOURCES)
    parser.add_argument("--correlation-id", default=str(uuid.uuid4()))
    parser.add_argument("--service", default="qm-demo", help="service name for --dry-run")
    for name, port in (("demo", 8000), ("tempo", 3200), ("loki", 3100), ("prometheus", 9090)):
        parser.add_argument(f"--{name}", default=f"http://127.0.0.1:{port}")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds each link may take to show")
    parser.add_argument("--dry-run", action="store_true", help="print the queries, send nothing")
    args = parser.parse_args(argv)
    links = load_links(args.datasources)
    if args.dry_run:
        dry_run(links, args.correlation_id, args.service)
        return 0
    with httpx.Client(timeout=10.0) as client:
        checker = StackLinks(links, client, demo=args.demo, tempo=args.tempo, loki=args.loki,
                             prometheus=args.prometheus, timeout_s=args.timeout)
        try:
            checker.run(args.correlation_id)
        except LinkBroken as exc:
            print(f"BROKEN {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
