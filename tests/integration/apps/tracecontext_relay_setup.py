"""The W3C Trace Context relay app, wired with qm_otel.setup() after it was created."""

import qm_otel
from tests.integration.apps.tracecontext_relay import app

qm_otel.setup(app=app)
