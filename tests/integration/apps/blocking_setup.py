"""The blocking app, wired with qm_otel.setup() after it was created."""

import qm_otel
from tests.integration.apps.blocking import app

qm_otel.setup(app=app)
