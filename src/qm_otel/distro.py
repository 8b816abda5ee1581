"""The ``opentelemetry-instrument`` entry points: qm-otel as the OTel distro and configurator.

``opentelemetry-instrument uvicorn app:app`` runs, in order: :meth:`QmOtelDistro.configure`,
:meth:`QmOtelConfigurator.configure` (which calls :func:`qm_otel.setup`, so both launch paths
build the same telemetry) and then each installed instrumentor through
:meth:`QmOtelDistro.load_instrumentor`.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

import qm_otel
from qm_otel import _state
from qm_otel.logs.pipeline import UVICORN_LOG_CONFIG

__all__ = ["QmOtelConfigurator", "QmOtelDistro"]

#: instrumentations setup() runs itself: loading their entry points again would double them
_WIRED_BY_SETUP = frozenset({"logging", "httpx"})


class QmOtelDistro(BaseDistro):  # type: ignore[misc]
    """Sets defaults before anything is configured and tunes the instrumentors as they load."""

    def _configure(self, **kwargs: Any) -> None:
        del kwargs
        # uvicorn reads UVICORN_LOG_CONFIG as --log-config: its loggers then propagate into
        # qm-otel's pipeline instead of printing their own format.
        # (or the same dictConfig file setup() applies, when QM_OTEL_LOG_CONFIG names one)
        os.environ.setdefault("UVICORN_LOG_CONFIG", os.environ.get("QM_OTEL_LOG_CONFIG") or str(UVICORN_LOG_CONFIG))

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Skip what ``setup()`` already wired (the log handler, httpx); tune FastAPI's instrumentor."""
        if entry_point.name in _WIRED_BY_SETUP:
            return
        state = _state.get()
        telemetry = state.telemetry if state is not None else None
        if state is not None and telemetry is not None:
            kwargs.update(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
            if entry_point.name == "fastapi":
                from qm_otel.integrations.fastapi import fastapi_instrumentor_kwargs

                kwargs.update(fastapi_instrumentor_kwargs(state.settings))
        super().load_instrumentor(entry_point, **kwargs)
        if entry_point.name == "fastapi" and telemetry is not None:
            _instrument_new_apps()


def _instrument_new_apps() -> None:
    """Every FastAPI or Starlette app created from now on gets :func:`qm_otel.instrument_app`.

    The contrib instrumentor has replaced ``fastapi.FastAPI`` by a subclass that adds the server
    span; this subclass of it adds the correlation middleware and the flush at lifespan end. The
    Starlette class is replaced only now, after ``fastapi`` is imported, so FastAPI keeps its base.
    """
    import fastapi
    import starlette.applications

    from qm_otel.integrations.fastapi import instrument_app

    fastapi_base: Any = fastapi.FastAPI
    starlette_base: Any = starlette.applications.Starlette

    class QmOtelFastAPI(fastapi_base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instrument_app(self)

    class QmOtelStarlette(starlette_base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instrument_app(self)

    fastapi.FastAPI = QmOtelFastAPI  # type: ignore[misc]
    starlette.applications.Starlette = QmOtelStarlette  # type: ignore[misc]


class QmOtelConfigurator:
    """The ``opentelemetry_configurator`` entry point: delegates to :func:`qm_otel.setup`."""

    def configure(self, **kwargs: Any) -> None:
        """Called once by ``opentelemetry-instrument``."""
        del kwargs
        qm_otel.setup()
