"""Pydantic's logfire as a peer: OTLP to the same sink (OTEL_EXPORTER_OTLP_ENDPOINT), nothing to logfire.dev."""

import logging

import logfire

from benchmarks.apps.common import make_app

logfire.configure(send_to_logfire=False, console=False, service_name="bench", inspect_arguments=False)
logging.basicConfig(level=logging.INFO, handlers=[logfire.LogfireLoggingHandler()])
app = make_app()
logfire.instrument_fastapi(app)


def flush() -> None:
    """Export everything buffered and close."""
    logfire.shutdown()
