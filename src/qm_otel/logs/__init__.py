"""The log pipeline: stdout formatters and the uvicorn routing config."""

from qm_otel.logs.formatters import JsonFormatter, TextFormatter
from qm_otel.logs.pipeline import (
    UVICORN_LOG_CONFIG,
    install_root_handlers,
    remove_log_handlers,
    route_uvicorn_loggers,
)

__all__ = [
    "UVICORN_LOG_CONFIG",
    "JsonFormatter",
    "TextFormatter",
    "install_root_handlers",
    "remove_log_handlers",
    "route_uvicorn_loggers",
]
