"""No telemetry at all."""

from benchmarks.apps.common import make_app

app = make_app()


def flush() -> None:
    """Nothing to flush."""
