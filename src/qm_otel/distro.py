"""The ``opentelemetry-instrument`` entry points: qm-otel as the OTel distro and configurator.

``opentelemetry-instrument uvicorn app:app`` runs, in order: :meth:`QmOtelDistro.configure`,
:meth:`QmOtelConfigurator.configure` (which calls :func:`qm_otel.setup`, so both launch paths
build the same telemetry, and makes every FastAPI or Starlette app instrument itself when it is
created) and then each installed instrumentor through :meth:`QmOtelDistro.load_instrumentor`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

import qm_otel
from qm_otel import _state
from qm_otel.config import ConfigError
from qm_otel.logs.pipeline import UVICORN_LOG_CONFIG

__all__ = ["QmOtelConfigurator", "QmOtelDistro"]

#: instrumentations qm-otel does itself: loading their entry points too would double them (the log
#: handler; httpx, which qm-otel instruments when it is imported — ``httpx2`` is the same package's
#: instrumentor for the httpx 2 line, whose loading imports httpx; and the server span, which
#: qm-otel makes for FastAPI and Starlette apps)
_WIRED_BY_SETUP = frozenset({"logging", "httpx", "httpx2", "fastapi", "starlette"})


class QmOtelDistro(BaseDistro):  # type: ignore[misc]
    """Sets defaults before anything is configured and hands the other instrumentors qm-otel's providers."""

    def _configure(self, **kwargs: Any) -> None:
        del kwargs
        # uvicorn reads UVICORN_LOG_CONFIG as --log-config: its loggers then propagate into
        # qm-otel's pipeline instead of printing their own format.
        # (or the same dictConfig file setup() applies, when QM_OTEL_LOG_CONFIG names one)
        os.environ.setdefault("UVICORN_LOG_CONFIG", os.environ.get("QM_OTEL_LOG_CONFIG") or str(UVICORN_LOG_CONFIG))

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Skip what qm-otel does itself; give the others the pipeline's providers."""
        if entry_point.name in _WIRED_BY_SETUP:
            return
        state = _state.get()
        if state is not None and state.telemetry is not None:
            kwargs.update(tracer_provider=state.telemetry.tracer_provider,
                          meter_provider=state.telemetry.meter_provider)
        super().load_instrumentor(entry_point, **kwargs)


def _instrument_new_apps() -> None:
    """Every FastAPI or Starlette app created from now on gets :func:`qm_otel.instrument_app`.

    ``fastapi.FastAPI`` and ``starlette.applications.Starlette`` are replaced by subclasses whose
    constructor instruments the app. FastAPI is imported (when installed) before Starlette's class
    is replaced, so FastAPI keeps its own base class and an app is instrumented once.
    """
    from qm_otel.integrations.fastapi import instrument_app

    try:
        import fastapi
    except ImportError:
        fastapi = None  # type: ignore[assignment]
    try:
        import starlette.applications
    except ImportError:
        return
    if fastapi is not None:
        fastapi_base: Any = fastapi.FastAPI

        class QmOtelFastAPI(fastapi_base):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                instrument_app(self)

        fastapi.FastAPI = QmOtelFastAPI  # type: ignore[misc]
    starlette_base: Any = starlette.applications.Starlette

    class QmOtelStarlette(starlette_base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instrument_app(self)

    starlette.applications.Starlette = QmOtelStarlette  # type: ignore[misc]


class QmOtelConfigurator:
    """The ``opentelemetry_configurator`` entry point: delegates to :func:`qm_otel.setup`."""

    def configure(self, **kwargs: Any) -> None:
        """Called once by ``opentelemetry-instrument``: set up, then instrument every app made from now on.

        A log file that cannot be written does not stop the service: one line on stderr says so and
        logs go to stdout (and OTLP) only.
        """
        del kwargs
        try:
            qm_otel.setup()
        except ConfigError as exc:
            if exc.setting != "log_file":
                raise
            print(f"qm-otel: {exc}; logging to stdout only", file=sys.stderr, flush=True)
            _setup_without_log_file()
        _instrument_new_apps()


def _setup_without_log_file() -> None:
    """``setup()`` with ``QM_OTEL_LOG_FILE`` removed from this process's environment.

    It stays removed: an application that calls ``setup()`` itself then resolves the same settings
    (no second error, no "other settings" warning), and so do the workers it starts.
    """
    os.environ.pop("QM_OTEL_LOG_FILE", None)
    qm_otel.setup()
