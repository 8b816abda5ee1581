"""qm-otel's ASGI middleware under one import path: correlation, the request log.

The parts live in rooms of their own: :mod:`~qm_otel.integrations.correlation_middleware`,
:mod:`~qm_otel.integrations.request_log`, :mod:`~qm_otel.integrations.server` (the server span and
metrics), :mod:`~qm_otel.integrations.scope` (what they read from the ASGI scope).
"""

from __future__ import annotations

from qm_otel.integrations.correlation_middleware import CorrelationMiddleware
from qm_otel.integrations.request_log import UNMATCHED, RequestLog, RequestLogMiddleware

__all__ = ["UNMATCHED", "CorrelationMiddleware", "RequestLog", "RequestLogMiddleware"]
