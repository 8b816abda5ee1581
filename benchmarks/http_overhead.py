"""Per-request overhead of HTTP server telemetry on a tiny FastAPI app.

Variants, each measured in a fresh subprocess (OTel global providers can be set once per process):

* ``bare``: FastAPI, no OpenTelemetry configured.
* ``native``: FastAPI's native telemetry (``fastapi.telemetry``), global SDK providers, operation spans on.
* ``native-no-opspans``: the same with ``FastAPI(telemetry={"operation_spans": False})``.
* ``contrib``: global SDK providers and ``FastAPIInstrumentor.instrument_app(app, exclude_spans=[...])``
  with ``OTEL_SEMCONV_STABILITY_OPT_IN=http``.
* ``qm-otel``: ``qm_otel.setup(app=app, ...)`` with every exporter off.

Every variant with telemetry exports spans through a ``BatchSpanProcessor`` to the same exporter (a no-op
one when timing) and aggregates metrics in the same ``InMemoryMetricReader`` (never collected when timing),
so export cost is minimal and equal across variants. Requests are driven in-process by calling the ASGI
app with a synthetic HTTP scope: no network, no HTTP client. Timing runs in rounds: each round starts a
fresh subprocess per variant (rotating the order), which sends warm-up requests and then times one batch;
the median over the rounds is reported, so slow drift of the machine hits every variant alike. A separate
short run per variant counts the SERVER spans and ``http.server.request.duration`` histogram points one
request yields.

Run: ``python benchmarks/http_overhead.py [--requests N] [--repeats R] [--warmup W]``.
The script only prints figures; it never asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from starlette.types import ASGIApp, Message, Scope

VARIANTS = ("bare", "native", "native-no-opspans", "contrib", "qm-otel")
DURATION_METRIC = "http.server.request.duration"
NATIVE_SCOPE = "fastapi"  # instrumentation scope name of FastAPI's native telemetry
RESULT_MARKER = "HTTP_OVERHEAD_RESULT "
VERIFY_REQUESTS = 10


# --------------------------------------------------------------------------------------------------
# child process: build one variant, then time it or verify it
# --------------------------------------------------------------------------------------------------


def make_app(operation_spans: bool | None = None) -> FastAPI:
    """The app under test: one ``GET /items/{item_id}`` route returning a small dict.

    ``operation_spans`` set: pass ``telemetry={"operation_spans": ...}`` to FastAPI's native telemetry.
    """
    from fastapi import FastAPI

    app = FastAPI() if operation_spans is None else FastAPI(telemetry={"operation_spans": operation_spans})

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q, "ok": True}

    return app


def _null_span_exporter() -> SpanExporter:
    """A span exporter that drops every batch: the cheapest possible export."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullSpanExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            del spans
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    return NullSpanExporter()


def _install_sdk_providers(span_exporter: SpanExporter, metric_reader: MetricReader) -> None:
    """Set SDK TracerProvider and MeterProvider globally, as an application would."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[metric_reader]))


def build_variant(variant: str, span_exporter: SpanExporter, metric_reader: MetricReader) -> FastAPI:
    """Return the ASGI app of ``variant``, with its telemetry configured in this process."""
    if variant == "bare":
        return make_app()
    if variant in ("native", "native-no-opspans"):
        _install_sdk_providers(span_exporter, metric_reader)
        return make_app(operation_spans=variant == "native")
    if variant == "contrib":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        _install_sdk_providers(span_exporter, metric_reader)
        app = make_app()
        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])
        return app
    if variant == "qm-otel":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        import qm_otel

        app = make_app()
        qm_otel.setup(
            app=app,
            traces_exporter="none",
            metrics_exporter="none",
            logs_exporter="none",
            log_format="none",
            span_processors=[BatchSpanProcessor(span_exporter)],
            metric_readers=[metric_reader],
        )
        return app
    message = f"unknown variant {variant!r}"
    raise ValueError(message)


def _scope(item_id: int) -> Scope:
    """A fresh synthetic ASGI HTTP scope for ``GET /items/{item_id}?q=x`` (middlewares mutate it)."""
    path = f"/items/{item_id}"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"q=x",
        "headers": [(b"host", b"testserver"), (b"user-agent", b"http-overhead"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


async def _request(app: ASGIApp, item_id: int) -> int:
    """Send one request through the ASGI app; return the response status."""
    received = False
    status = 0

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(item_id), receive, send)
    return status


async def _drive(app: ASGIApp, count: int) -> None:
    """Send ``count`` requests one after the other; fail loudly on a non-200 response."""
    for i in range(count):
        status = await _request(app, i)
        if status != 200:
            message = f"GET /items/{i} answered {status}"
            raise RuntimeError(message)


def bench(variant: str, requests: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Time ``repeats`` batches of ``requests`` requests after ``warmup`` ones; return req/s per batch."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    app = build_variant(variant, _null_span_exporter(), InMemoryMetricReader())
    rates: list[float] = []

    async def run() -> None:
        await _drive(app, warmup)
        for _ in range(repeats):
            gc.collect()
            started = time.perf_counter()
            await _drive(app, requests)
            rates.append(requests / (time.perf_counter() - started))

    asyncio.run(run())
    _shutdown()
    return {"variant": variant, "rates": rates}


def verify(variant: str) -> dict[str, Any]:
    """Send a few requests with in-memory exporters; count server spans and duration points."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    span_exporter = InMemorySpanExporter()
    metric_reader = InMemoryMetricReader()
    app = build_variant(variant, span_exporter, metric_reader)
    asyncio.run(_drive(app, VERIFY_REQUESTS))

    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()
    spans = span_exporter.get_finished_spans()
    names = sorted({f"{s.name} [{s.instrumentation_scope.name}]" for s in spans if s.instrumentation_scope})

    duration_points = 0
    duration_scopes: set[str] = set()
    data = metric_reader.get_metrics_data() if variant != "bare" else None
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != DURATION_METRIC:
                    continue
                duration_scopes.add(scope_metrics.scope.name)
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        duration_points += point.count
    _shutdown()
    return {
        "variant": variant,
        "server_spans": sum(1 for s in spans if s.kind == SpanKind.SERVER) / VERIFY_REQUESTS,
        "native_spans": sum(
            1 for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == NATIVE_SCOPE
        )
        / VERIFY_REQUESTS,
        "spans_per_request": len(spans) / VERIFY_REQUESTS,
        "duration_points": duration_points / VERIFY_REQUESTS,
        "duration_scopes": sorted(duration_scopes),
        "span_names": names,
    }


def _shutdown() -> None:
    """Flush and close whatever providers this child process set globally."""
    from opentelemetry import metrics, trace

    qm_otel_state = sys.modules.get("qm_otel._state")
    if qm_otel_state is not None and qm_otel_state.get() is not None:
        import qm_otel

        qm_otel.shutdown()  # qm-otel owns its providers (and would shut them down again at exit)
        return
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()


def child_main(args: argparse.Namespace) -> None:
    """Entry point of a child process: print one JSON result line on stdout."""
    bench_mode = args.mode == "bench"
    result = bench(args.child, args.requests, args.repeats, args.warmup) if bench_mode else verify(args.child)
    print(RESULT_MARKER + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# parent process: one fresh subprocess per variant and mode, then the table
# --------------------------------------------------------------------------------------------------


def _child_env(variant: str) -> dict[str, str]:
    """The environment of a child: the caller's, minus settings that would change what is measured."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "QM_OTEL_", "FASTAPI_OTEL_"))
    }
    if variant in ("contrib", "qm-otel"):
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    env["PYTHONHASHSEED"] = "0"
    return env


def run_child(variant: str, mode: str, args: argparse.Namespace, repeats: int = 1) -> dict[str, Any]:
    """Run this script as a fresh subprocess for one variant and mode; return its JSON result."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        variant,
        "--mode",
        mode,
        "--requests",
        str(args.requests),
        "--repeats",
        str(repeats),
        "--warmup",
        str(args.warmup),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=_child_env(variant), check=False, timeout=600
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARKER))
            return result
    message = f"{variant}/{mode} failed (exit {completed.returncode}):\n{completed.stderr}"
    raise RuntimeError(message)


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned plain-text table."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    header = "  ".join(cell.ljust(width) for cell, width in zip(headers, widths, strict=True))
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([header.rstrip(), rule, *(line.rstrip() for line in lines)])


def parent_main(args: argparse.Namespace) -> None:
    """Run every variant in fresh subprocesses and print the versions and the results table."""
    print(
        f"python {sys.version.split()[0]}  fastapi {version('fastapi')}  "
        f"opentelemetry-sdk {version('opentelemetry-sdk')}  "
        f"opentelemetry-instrumentation-fastapi {version('opentelemetry-instrumentation-fastapi')}  "
        f"qm-otel {version('qm-otel')}"
    )
    print(
        f"median req/s of {args.repeats} rounds; per round and variant: a fresh subprocess, "
        f"{args.warmup} warm-up + {args.requests} timed requests; "
        f"counts from a separate {VERIFY_REQUESTS}-request run with in-memory exporters"
    )
    print()

    rates: dict[str, list[float]] = {variant: [] for variant in args.variants}
    for round_index in range(args.repeats):
        shift = round_index % len(args.variants)
        for variant in [*args.variants[shift:], *args.variants[:shift]]:
            rates[variant].extend(run_child(variant, "bench", args)["rates"])
    checks = {variant: run_child(variant, "verify", args) for variant in args.variants}
    medians = {variant: statistics.median(variant_rates) for variant, variant_rates in rates.items()}
    baseline = medians.get("bare")

    headers = [
        "variant",
        "req/s",
        "spread",
        "vs bare",
        "server spans/req",
        "duration pts/req",
        "native spans/req",
        "span names seen [instrumentation scope]",
    ]
    rows = []
    for variant in args.variants:
        check = checks[variant]
        spread = (max(rates[variant]) - min(rates[variant])) / medians[variant]
        rows.append(
            [
                variant,
                f"{medians[variant]:,.0f}",
                f"{spread:.0%}",
                f"{medians[variant] / baseline:.2f}" if baseline else "-",
                f"{check['server_spans']:g}",
                f"{check['duration_points']:g}",
                f"{check['native_spans']:g}",
                ", ".join(check["span_names"]) or "-",
            ]
        )
    print(_format_table(headers, rows))
    print()
    print(
        "duration histogram scopes: "
        + "; ".join(
            f"{variant}: {', '.join(checks[variant]['duration_scopes']) or '-'}" for variant in args.variants
        )
    )
    print(
        "spread = (max - min) / median over the rounds; native spans = spans of scope "
        f"{NATIVE_SCOPE!r} (FastAPI's native telemetry)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--child`` and ``--mode`` are internal (one subprocess per variant)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=4000, help="requests per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed requests before timing")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("bench", "verify"), default="bench", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (parent) or one measurement (child)."""
    args = parse_args(argv)
    if args.child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
