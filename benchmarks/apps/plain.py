"""The app as a zero-code launch sees it: telemetry comes from ``opentelemetry-instrument``."""

from benchmarks.apps.common import make_app

app = make_app()


def flush() -> None:
    """Shut down whatever providers the wrapper set globally (exports what is buffered)."""
    from opentelemetry import _logs, metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()
    try:
        import qm_otel
    except ImportError:
        return
    qm_otel.shutdown()
