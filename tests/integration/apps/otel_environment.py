"""The app of tests/integration/test_otel_environment.py: spans and records over every limit, and /pipeline.

``/pipeline`` reports what the SDK objects were built with (queue sizes, timeouts, TLS files), for
the variables whose effect is not visible in what a receiver gets. ``OTEL_ENV_APP_SETUP=1`` calls
``qm_otel.setup(app=app)``; without it the app is for ``opentelemetry-instrument``.
"""

import logging
import os
from typing import Any

import requests
from fastapi import FastAPI
from opentelemetry import _logs, metrics, trace

app = FastAPI()
log = logging.getLogger("itest")


def session() -> requests.Session:
    """A credential provider (entry point group opentelemetry_otlp_credential_provider): marks its requests."""
    made = requests.Session()
    made.headers["x-credential-provider"] = os.environ.get("OTEL_ENV_APP_SESSION_MARK", "session")
    return made


if os.environ.get("OTEL_ENV_APP_SETUP") == "1":  # after session(): the exporters load it from this module
    import qm_otel

    qm_otel.setup(app=app)


@app.get("/limits")
async def limits() -> dict[str, bool]:
    tracer = trace.get_tracer("itest")
    here = trace.get_current_span().get_span_context()
    links = [trace.Link(here, {f"l{i}": i for i in range(6)}) for _ in range(6)]
    with tracer.start_as_current_span("limits", links=links) as span:
        for i in range(12):
            span.set_attribute(f"a{i}", i)
        span.set_attribute("long", "x" * 100)
        for j in range(6):
            span.add_event(f"e{j}", {f"k{i}": i for i in range(6)})
    log.info("limits", extra={**{f"r{i}": i for i in range(12)}, "long": "y" * 100})
    return {"ok": True}


@app.get("/burst/{n}")
async def burst(n: int) -> dict[str, int]:
    tracer = trace.get_tracer("itest")
    for i in range(n):
        with tracer.start_as_current_span(f"burst-{i}"):
            log.info("burst %d", i)
    return {"n": n}


def _exporter(processor: Any) -> dict[str, Any]:
    batch = getattr(processor, "_batch_processor", None)
    exporter = getattr(batch, "_exporter", None)
    # a qm-otel delivery names the SDK exporter's client sdk_client; an SDK exporter (gRPC, console) has its own
    client = getattr(exporter, "sdk_client", None) or getattr(exporter, "_client", None)
    session = getattr(getattr(client, "_transport", None), "_session", None)
    grpc_headers = getattr(exporter, "_headers", None)
    return {
        "headers": dict(grpc_headers) if isinstance(grpc_headers, tuple) else getattr(client, "_headers", None),
        "compression": str(getattr(exporter, "_compression", None) or getattr(client, "_compression", None)),
        "insecure": getattr(exporter, "_insecure", None),
        "queue": getattr(batch, "_max_queue_size", None),
        "batch": getattr(batch, "_max_export_batch_size", None),
        "delay": getattr(batch, "_schedule_delay_millis", None),
        "timeout": getattr(client, "_timeout", getattr(exporter, "_timeout", None)),
        "verify": getattr(session, "verify", None),
        "cert": getattr(session, "cert", None),
    }


@app.get("/pipeline")
async def pipeline() -> dict[str, Any]:
    tracer_provider: Any = trace.get_tracer_provider()
    logger_provider: Any = _logs.get_logger_provider()
    meter_provider: Any = metrics.get_meter_provider()
    span_processors = tracer_provider._active_span_processor._span_processors
    log_processors = logger_provider._multi_log_record_processor._log_record_processors
    readers = meter_provider._metric_readers
    return {
        "traces": [_exporter(p) for p in span_processors if hasattr(p, "_batch_processor")],
        "logs": [_exporter(p) for p in log_processors if hasattr(p, "_batch_processor")],
        "metric_readers": [{**_exporter(type("Reader", (), {"_batch_processor": r})()),
                            "interval": getattr(r, "_export_interval_millis", None),
                            "export_timeout": getattr(r, "_export_timeout_millis", None)}
                           for r in readers if hasattr(r, "_export_interval_millis")],
        "sdk_log_level": logging.getLogger("opentelemetry").level,
        "span_limits": repr(tracer_provider._span_limits),
    }
