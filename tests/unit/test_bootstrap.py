"""Pieces of setup that need no global state: endpoints per signal, the API's guards, the settings table."""

from __future__ import annotations

from pathlib import Path

import pytest

import qm_otel
from qm_otel import _state
from qm_otel.core.config import ConfigError, resolve_settings
from qm_otel.signals.exporters import signal_endpoint as _signal_endpoint


def test_http_endpoints_get_the_signal_path() -> None:
    settings = resolve_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert _signal_endpoint(settings, "traces") == "http://collector:4318/v1/traces"
    assert _signal_endpoint(settings, "logs") == "http://collector:4318/v1/logs"


def test_an_endpoint_that_ends_in_a_signal_path_keeps_the_spec_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = resolve_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/v1/traces"})
    endpoints = [_signal_endpoint(settings, name) for name in ("traces", "metrics", "logs", "traces")]
    assert endpoints == ["http://collector:4318/v1/traces/v1/traces", "http://collector:4318/v1/traces/v1/metrics",
                         "http://collector:4318/v1/traces/v1/logs", "http://collector:4318/v1/traces/v1/traces"]
    warnings = [r.getMessage() for r in caplog.records if "already ends in /v1/traces" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://collector:4318/v1/traces" in warnings[0]


def test_an_exporter_named_for_grpc_gets_the_base_endpoint_even_when_the_protocol_setting_is_http() -> None:
    settings = resolve_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert _signal_endpoint(settings, "traces", "grpc") == "http://collector:4317"  # otlp_proto_grpc
    assert _signal_endpoint(settings, "traces") == "http://collector:4317/v1/traces"


def test_grpc_endpoint_is_used_as_is() -> None:
    settings = resolve_settings({"exporter_protocol": "grpc", "exporter_endpoint": "http://c:4317"}, {})
    assert _signal_endpoint(settings, "metrics") == "http://c:4317"


def test_a_per_signal_variable_wins_over_the_general_one_but_not_over_qm_otel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces-only:4318/v1/traces")
    general = resolve_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert _signal_endpoint(general, "traces") is None  # the exporter reads its own variable
    assert _signal_endpoint(general, "logs") == "http://collector:4318/v1/logs"
    explicit = resolve_settings({"exporter_endpoint": "http://mine:4318"}, {})
    assert _signal_endpoint(explicit, "traces") == "http://mine:4318/v1/traces"


def test_instrument_app_needs_setup_first() -> None:
    assert _state.PIPELINE.get() is None
    with pytest.raises(RuntimeError, match=r"setup\(\) first"):
        qm_otel.instrument_app(object())


def test_shutdown_before_setup_is_a_no_op() -> None:
    assert qm_otel.shutdown() is True


def test_every_setting_is_a_typed_keyword_of_setup() -> None:
    import importlib
    import inspect
    import typing

    from qm_otel.core.config import PARAMS, SETTING_NAMES
    from qm_otel.core.setup_options import SetupOptions

    parameters = inspect.signature(qm_otel.setup).parameters
    assert all(p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for p in parameters.values())
    assert parameters["options"].annotation == "Unpack[SetupOptions]"
    hints = typing.get_type_hints(SetupOptions)
    assert set(hints) == SETTING_NAMES
    assert SetupOptions.__required_keys__ == frozenset()
    namespace = vars(importlib.import_module(SetupOptions.__module__))
    for param in (p for p in PARAMS if p.keyword):  # the type each row accepts, and None for "not given"
        assert hints[param.name] == eval(f"{param.accepts} | None", namespace)


def test_the_settings_table_is_declared_once_and_generates_the_rest() -> None:
    from qm_otel.cli.render import OPTIONS, SETTINGS_PAGE, settings_files
    from qm_otel.core.config import PARAMS

    root = Path(__file__).resolve().parents[2]
    files = settings_files(root)
    assert files[OPTIONS] == (root / OPTIONS).read_text(encoding="utf-8"), "run `qm-otel render`"
    assert files[SETTINGS_PAGE] == (root / SETTINGS_PAGE).read_text(encoding="utf-8"), "run `qm-otel render`"
    page = files[SETTINGS_PAGE]
    for param in PARAMS:
        assert f"| `{param.name}` | `{param.env}`" in page
        assert param.allowed in page


def test_an_unknown_keyword_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="servce_name"):
        qm_otel.setup(servce_name="x")  # type: ignore[call-arg]
