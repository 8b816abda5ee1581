"""Issue 14, item 1: exporter lists and exporters other packages register, as the SDK's configurator allows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qm_otel.core.config import ConfigError, resolve_settings
from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver


def test_lists_and_none_are_read_as_the_specification_writes_them() -> None:
    settings = resolve_settings({}, {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_LOGS_EXPORTER": "none",
                                     "OTEL_METRICS_EXPORTER": "prometheus,otlp"})
    assert settings.traces_exporter == ("otlp", "console")
    assert settings.logs_exporter == ()
    assert settings.metrics_exporter == ("prometheus", "otlp")


@pytest.mark.parametrize(("value", "expected"), [
    ("zipkin", "'zipkin' is not"),
    ("otlp,none", "`none` alone"),
])
def test_an_unknown_exporter_is_refused_naming_what_is_installed(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_settings({}, {"OTEL_TRACES_EXPORTER": value})
    message = str(caught.value)
    assert message.startswith(f"qm-otel setting 'traces_exporter' (from OTEL_TRACES_EXPORTER) got {value!r}")
    assert expected in message
    if value == "zipkin":
        assert "console, otlp, otlp_proto_grpc, otlp_proto_http" in message  # the SDK's own, registered here


@pytest.mark.parametrize("launch", ["setup", "opentelemetry-instrument"])
def test_a_list_with_console_and_a_registered_exporter_exports_to_each(
    receiver: OtlpReceiver, tmp_path: Path, launch: str
) -> None:
    spans_file = tmp_path / "spans.txt"
    app, zero_code = svc.LAUNCHES[launch]
    env = svc.base_env(receiver.endpoint, OTEL_TRACES_EXPORTER="otlp,console,file",
                       FILE_EXPORTER_PATH=str(spans_file))
    site = svc.registering_distribution(tmp_path / "site", "qm-otel-test-file-exporter",
                                        "opentelemetry_traces_exporter", "file",
                                        "tests.support.file_exporter:FileSpanExporter")
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    with svc.start(app, env, zero_code=zero_code) as service:
        assert service.get("/work/5").status_code == 200
        receiver.wait_for(lambda r: any(s.name == "GET /work/{n}" for s in r.snapshot()[0]))
    assert "GET /work/{n}" in spans_file.read_text().splitlines()  # the registered exporter
    assert '"name": "GET /work/{n}"' in service.output()  # the console exporter
