"""qm-otel wired in code: ``qm_otel.setup(app=app)``."""

import qm_otel
from benchmarks.apps.common import make_app

app = make_app()
qm_otel.setup(app=app)


def flush() -> None:
    """Export everything buffered and close."""
    qm_otel.shutdown(timeout_s=60)
