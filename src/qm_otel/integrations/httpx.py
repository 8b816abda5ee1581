"""Outgoing HTTP with httpx: client spans and duration metrics, the span's ``url.full`` redacted.

``traceparent`` and ``X-Correlation-ID`` are propagated by the global propagator. A process that
has not imported httpx when ``setup()`` runs does not pay for it (about 150 ms here, with its
instrumentation): it is instrumented when it is first imported, with the pipeline in force then.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from qm_otel import _state
from qm_otel.redaction import client_request_hooks

__all__ = ["instrument_httpx", "instrument_httpx_when_imported"]


def instrument_httpx(tracer_provider: TracerProvider, meter_provider: MeterProvider, words: Sequence[str]) -> None:
    """Instrument every httpx client (once per process; a later call re-binds to the new providers)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    hook, async_hook = client_request_hooks(words)
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider,
                            request_hook=hook, async_request_hook=async_hook)


def _instrument_with_state() -> None:
    state = _state.get()
    if state is not None and state.telemetry is not None:
        telemetry = state.telemetry
        instrument_httpx(telemetry.tracer_provider, telemetry.meter_provider, state.settings.sensitive_fields)


class _ThenInstrument(importlib.abc.Loader):
    """httpx's own loader, followed by the instrumentation once the module has run."""

    def __init__(self, loader: importlib.abc.Loader, finder: _InstrumentOnImport) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        try:
            _instrument_with_state()
        except Exception:  # the application's import of httpx never fails because of telemetry
            logging.getLogger("qm_otel").exception("qm-otel could not instrument httpx; its calls are not traced")


class _InstrumentOnImport(importlib.abc.MetaPathFinder):
    """Finds httpx on ``sys.path`` as the standard finder does and wraps its loader (until it is imported).

    Asking for the spec without importing (``importlib.util.find_spec``) leaves it in place.
    """

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        del target
        if fullname != "httpx":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenInstrument(spec.loader, self)
        return spec


def instrument_httpx_when_imported() -> bool:
    """Instrument httpx now if it is imported, else when it is; False when it is not installed."""
    if "httpx" in sys.modules:
        _instrument_with_state()
        return True
    if importlib.util.find_spec("httpx") is None:
        return False
    if not any(isinstance(finder, _InstrumentOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstrumentOnImport())
    return True
