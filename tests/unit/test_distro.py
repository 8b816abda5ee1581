"""The opentelemetry-instrument entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

import qm_otel
from qm_otel.instrumentation.libraries import SanitizingTracerProvider
from qm_otel.launch.distro import QmOtelConfigurator, QmOtelDistro, process_role
from qm_otel.testing import Capture, reset


def test_qm_otel_is_registered_as_distro_and_configurator() -> None:
    distros = {ep.name: ep.value for ep in entry_points(group="opentelemetry_distro")}
    configurators = {ep.name: ep.value for ep in entry_points(group="opentelemetry_configurator")}
    assert distros == {"qm_otel": "qm_otel.launch.distro:QmOtelDistro"}  # no second distro installed beside it
    assert configurators == {"qm_otel": "qm_otel.launch.distro:QmOtelConfigurator"}
    assert entry_points(group="opentelemetry_distro")["qm_otel"].load() is QmOtelDistro
    assert entry_points(group="opentelemetry_configurator")["qm_otel"].load() is QmOtelConfigurator


class FakeEntryPoint:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []

    def load(self) -> Any:
        calls = self.calls

        class Instrumentor:
            def instrument(self, **kwargs: Any) -> None:
                calls.append(kwargs)

        return Instrumentor


@pytest.mark.parametrize("name", ["logging", "httpx"])
def test_instrumentations_setup_wires_itself_are_not_loaded_twice(name: str) -> None:
    entry_point = FakeEntryPoint(name)
    QmOtelDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.calls == []


def test_other_instrumentors_get_qm_otels_providers_and_the_wrappers_arguments() -> None:
    capture = Capture()
    telemetry = qm_otel.setup(traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                              **capture.setup_kwargs())
    try:
        entry_point = FakeEntryPoint("redis")
        QmOtelDistro().load_instrumentor(entry_point, skip_dep_check=True)
    finally:
        reset()
    [call] = entry_point.calls
    assert call["skip_dep_check"] is True
    assert call["meter_provider"] is telemetry.meter_provider
    assert isinstance(call["tracer_provider"], SanitizingTracerProvider)


def test_nothing_is_instrumented_while_telemetry_is_off() -> None:
    entry_point = FakeEntryPoint("redis")
    QmOtelDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.calls == []


def test_id_generator_and_propagator_are_registered_for_the_stock_sdk_path() -> None:
    from qm_otel.core.correlation import CorrelationIdGenerator, CorrelationPropagator

    assert entry_points(group="opentelemetry_id_generator")["qm_otel"].load() is CorrelationIdGenerator
    assert entry_points(group="opentelemetry_propagator")["qm_otel_correlation"].load() is CorrelationPropagator


@pytest.mark.parametrize(
    ("argv", "environ", "role"),
    [
        (["python", "-B", "-c", "from multiprocessing.resource_tracker import main;main(6)"], {}, "helper"),
        (["python", "-c", "from multiprocessing.forkserver import main; main(3)"], {}, "helper"),
        (["python", "-B", "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=7)",
          "--multiprocessing-fork"], {}, "worker"),
        (["python", "/venv/bin/uvicorn", "app:app"], {}, "worker"),
        (["python", "/venv/bin/uvicorn", "app:app", "--workers", "2"], {}, "supervisor"),
        (["python", "/venv/bin/uvicorn", "app:app", "--workers=1"], {}, "worker"),
        (["python", "/venv/bin/uvicorn", "app:app", "--reload"], {}, "supervisor"),
        (["python", "-m", "uvicorn", "app:app"], {"WEB_CONCURRENCY": "4"}, "supervisor"),
        (["python", "-m", "uvicorn", "app:app"], {"UVICORN_WORKERS": "x"}, "worker"),
        (["python", "/venv/bin/gunicorn", "-c", "conf.py", "app:app"], {}, "supervisor"),
        (["python", "-m", "gunicorn", "app:app"], {}, "supervisor"),
        (["python", "/venv/bin/hypercorn", "app:app"], {}, "worker"),
        (["python", "script.py"], {}, "worker"),
    ],
)
def test_the_process_role_is_read_from_the_command_line(argv: list[str], environ: dict[str, str], role: str) -> None:
    assert process_role(argv, environ) == role
