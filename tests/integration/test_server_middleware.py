"""qm-otel's server middleware keeps the contrib instrumentation's semantics: the same span and metrics.

Both run in a fresh process (the contrib instrumentation reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per
process) on the same FastAPI app, with the same requests; their spans and metric points are compared
field by field. The documented differences are the only ones allowed: the instrumentation scope,
``server.address`` without the port, and the query string redacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from qm_otel.integrations.server import DURATION_BUCKETS

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from fastapi import FastAPI, Request
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    def make_app():
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: int):
            if item_id == 13:
                raise RuntimeError("boom")
            return {"id": item_id}

        @app.post("/orders")
        async def order(request: Request):
            return {"size": len(await request.body())}

        return app

    def instrument(kind, app, tracer_provider, meter_provider):
        if kind == "contrib":
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
            FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider,
                                               exclude_spans=["receive", "send"], excluded_urls="/healthz")
            return app
        from qm_otel.integrations.server import DURATION_BUCKETS, ServerTelemetryMiddleware
        app._telemetry.update(tracing=False, metrics=False, logs=False)
        build = app.build_middleware_stack
        app.build_middleware_stack = lambda: ServerTelemetryMiddleware(
            build(), tracer_provider=tracer_provider, meter_provider=meter_provider, excluded=["/healthz"],
            sensitive_fields=["token"])
        return app

    REQUESTS = [
        ("GET", "/items/7", b"", [(b"user-agent", b"curl/8.5"), (b"host", b"shop.example:8443")]),
        ("GET", "/items/13", b"", [(b"host", b"shop.example")]),
        ("GET", "/nowhere", b"a=1&token=secret", [(b"host", b"shop.example")]),
        ("POST", "/orders", b"", [(b"host", b"shop.example"), (b"content-length", b"5")]),
        ("GET", "/items/8", b"", [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]),
        ("GET", "/healthz", b"", []),
        ("PURGE", "/items/9", b"", []),
    ]

    async def drive(app):
        for method, path, query, headers in REQUESTS:
            sent = False
            async def receive():
                nonlocal sent
                if sent:
                    await asyncio.sleep(3600)
                sent = True
                return {"type": "http.request", "body": b"hello" if method == "POST" else b"", "more_body": False}
            async def send(message):
                pass
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                     "scheme": "https", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query,
                     "headers": list(headers), "client": ("10.1.2.3", 4567), "server": ("10.0.0.1", 8443)}
            try:
                await app(scope, receive, send)
            except RuntimeError:
                pass

    kind = sys.argv[1]
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    asyncio.run(drive(instrument(kind, make_app(), tracer_provider, meter_provider)))
    spans = [{"name": s.name, "kind": str(s.kind), "status": str(s.status.status_code),
              "attributes": dict(s.attributes),
              "parent": s.parent.span_id if s.parent else None, "trace_id": s.context.trace_id,
              "events": [(e.name, e.attributes["exception.type"]) for e in s.events],
              "schema_url": s.instrumentation_scope.schema_url} for s in exporter.get_finished_spans()]
    points = []
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    points.append({"name": metric.name, "unit": metric.unit, "attributes": dict(point.attributes),
                                   "value": getattr(point, "count", None) or getattr(point, "value", None),
                                   "bounds": list(getattr(point, "explicit_bounds", []) or [])})
    print(json.dumps({"spans": spans, "points": points}, default=str))
    """
)


def run(kind: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QM_OTEL_"))}
    env.update(OTEL_SEMCONV_STABILITY_OPT_IN="http", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", SCRIPT, kind], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


def normalised(span: dict[str, Any]) -> dict[str, Any]:
    attributes = dict(span["attributes"])
    attributes.pop("url.query", None)  # qm-otel redacts it (checked below)
    attributes.pop("server.address", None)  # contrib: the socket's host:port; qm-otel: the Host header's host
    trace_id = span["trace_id"] if span["parent"] else None  # a root's trace ID is random
    return {**span, "attributes": attributes, "trace_id": trace_id}


def test_the_same_spans_and_metric_points_as_the_contrib_instrumentation() -> None:
    contrib, ours = run("contrib"), run("qm-otel")
    assert len(ours["spans"]) == len(contrib["spans"]) == 6  # /healthz is excluded by both
    for theirs, mine in zip(contrib["spans"], ours["spans"], strict=True):
        assert normalised(mine) == normalised(theirs)
    assert [s["attributes"]["server.address"] for s in ours["spans"]][:2] == ["shop.example", "shop.example"]
    assert ours["spans"][-2]["attributes"]["server.address"] == "10.0.0.1"  # no Host header: the socket's
    nowhere = next(s for s in ours["spans"] if s["attributes"].get("url.path") == "/nowhere")
    assert nowhere["attributes"]["url.query"] == "a=1&token=REDACTED"
    assert "http.route" not in nowhere["attributes"]  # an unmatched request has no route
    key = lambda p: (p["name"], json.dumps(p["attributes"], sort_keys=True))  # noqa: E731
    # the duration histogram's edges are the contrib's plus the conventions' 0.2 s and 2 s
    def duration_bounds(points: list[dict[str, Any]]) -> list[list[float]]:
        return [p.pop("bounds") for p in points if p["name"] == "http.server.request.duration"]

    assert {tuple(b) for b in duration_bounds(ours["points"])} == {DURATION_BUCKETS}
    assert {frozenset(b) | {0.2, 2.0} for b in duration_bounds(contrib["points"])} == {frozenset(DURATION_BUCKETS)}
    assert sorted(ours["points"], key=key) == sorted(contrib["points"], key=key)
