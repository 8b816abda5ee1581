"""Integrations: what qm-otel adds to the frameworks and clients a service uses.

Each is imported only when used (``import qm_otel`` imports none of them, so a worker that never
serves HTTP pays nothing for FastAPI, Starlette or httpx) and each is handed the state it needs:

- :mod:`~qm_otel.integrations.fastapi`: ``instrument_app`` for FastAPI and Starlette apps;
- :mod:`~qm_otel.integrations.scope`: the per-request view of the ASGI scope (headers decoded once);
- :mod:`~qm_otel.integrations.correlation_middleware`: ``X-Correlation-ID`` in and out;
- :mod:`~qm_otel.integrations.server`: the server span and the HTTP metrics;
- :mod:`~qm_otel.integrations.request_log`: the request-log record;
- :mod:`~qm_otel.integrations.httpx`: client spans with redacted URLs;
- :mod:`~qm_otel.integrations.health`: the liveness and readiness routes;
- :mod:`~qm_otel.integrations.patches`: the one table of what qm-otel changes in code and process
  state it does not own, and how ``shutdown()`` undoes each. The exception to "only when used":
  ``setup()`` imports it every time, so it imports no framework until a patch needs one.
"""
