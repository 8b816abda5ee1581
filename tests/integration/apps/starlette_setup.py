"""The Starlette app wired with qm_otel.setup(app=app)."""

import qm_otel
from tests.integration.apps.starlette_app import app

qm_otel.setup(app=app)
