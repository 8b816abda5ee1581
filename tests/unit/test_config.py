"""Settings: precedence, validation, and the table in docs/settings.md that documents them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import qm_otel
from qm_otel import _state
from qm_otel.core.config import PARAMS, ConfigError, resolve_settings

SETTINGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_defaults() -> None:
    s = resolve_settings({}, {})
    assert (s.service_name, s.exporter_protocol, s.exporter_endpoint) == (
        "unknown_service", "http/protobuf", "http://localhost:4318")
    assert (s.traces_exporter, s.metrics_exporter, s.logs_exporter) == (("otlp",), ("otlp",), ("otlp",))
    assert s.metric_export_interval_ms == 60000
    assert s.stdout_format == "text"  # development
    assert s.explicit == frozenset()


def test_grpc_default_endpoint() -> None:
    assert resolve_settings({"exporter_protocol": "grpc"}, {}).exporter_endpoint == "http://localhost:4317"


def test_precedence_argument_then_own_env_then_otel_env_then_resource_then_default() -> None:
    env = {"QM_OTEL_SERVICE_NAME": "own", "OTEL_SERVICE_NAME": "otel",
           "OTEL_RESOURCE_ATTRIBUTES": "service.name=res,service.version=9.9,deployment.environment.name=prod"}
    assert resolve_settings({"service_name": "arg"}, env).service_name == "arg"
    assert resolve_settings({}, env).service_name == "own"
    del env["QM_OTEL_SERVICE_NAME"]
    assert resolve_settings({}, env).service_name == "otel"
    del env["OTEL_SERVICE_NAME"]
    s = resolve_settings({}, env)
    assert (s.service_name, s.service_version, s.environment) == ("res", "9.9", "prod")
    assert s.stdout_format == "json"


def test_empty_string_counts_as_unset() -> None:
    env = {"QM_OTEL_TRACES_EXPORTER": "", "OTEL_TRACES_EXPORTER": "console"}
    assert resolve_settings({}, env).traces_exporter == ("console",)


def test_explicit_records_arguments_and_own_env_only() -> None:
    s = resolve_settings({"service_name": "a"}, {"QM_OTEL_LOG_LEVEL": "debug", "OTEL_TRACES_EXPORTER": "none"})
    assert s.explicit == {"service_name", "log_level"}
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("kwargs", "env", "setting", "source", "allowed"),
    [
        ({"traces_exporter": "zipkin"}, {}, "traces_exporter", "argument traces_exporter=", "console, otlp"),
        ({}, {"OTEL_METRICS_EXPORTER": "statsd"}, "metrics_exporter", "OTEL_METRICS_EXPORTER",
         "otlp_proto_http, prometheus"),
        ({}, {"QM_OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "exporter_endpoint",
         "QM_OTEL_EXPORTER_OTLP_ENDPOINT", "http(s) URL"),
        ({"exporter_endpoint": "ftp://collector"}, {}, "exporter_endpoint", "argument", "http(s) URL"),
        ({}, {"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, "metric_export_interval_ms", "OTEL_METRIC_EXPORT_INTERVAL",
         "positive integer"),
        ({"metric_export_interval_ms": 0}, {}, "metric_export_interval_ms", "argument", "positive integer"),
        ({}, {"QM_OTEL_LOG_FORMAT": "xml"}, "log_format", "QM_OTEL_LOG_FORMAT", "auto, json, text, pipe, none"),
        ({"log_level": "LOUD"}, {}, "log_level", "argument", "DEBUG, INFO"),
        ({}, {"QM_OTEL_EXCLUDED_URLS": "(unclosed"}, "excluded_urls", "QM_OTEL_EXCLUDED_URLS", "regular expr"),
        ({"shutdown_timeout_s": -1}, {}, "shutdown_timeout_s", "argument", "positive number"),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "exporter_protocol", "OTEL_EXPORTER_OTLP_PROTOCOL",
         "http/protobuf, grpc"),
    ],
)
def test_a_bad_value_names_the_setting_the_value_and_what_is_allowed(
    kwargs: dict[str, object], env: dict[str, str], setting: str, source: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(kwargs, env)
    message = str(info.value)
    bad = next(iter(kwargs.values())) if kwargs else next(iter(env.values()))
    assert repr(setting) in message
    assert source in message
    assert repr(bad) in message
    assert allowed in message


def test_setup_rejects_a_bad_setting_before_touching_global_state() -> None:
    with pytest.raises(ConfigError, match="traces_exporter"):
        qm_otel.setup(traces_exporter="jaeger")
    assert _state.PIPELINE.get() is None


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="servce_name"):
        resolve_settings({"servce_name": "x"}, {})


@given(name=st.sampled_from([p.name for p in PARAMS]), raw=st.text(max_size=300))
def test_any_env_text_parses_or_raises_config_error(name: str, raw: str) -> None:
    env_var = next(p.env for p in PARAMS if p.name == name)
    message = ""
    try:
        resolve_settings({}, {env_var: raw})
    except ConfigError as exc:
        message = str(exc)
    assert message == "" or repr(name) in message


def test_the_settings_table_lists_every_setting_with_its_variables_and_default() -> None:
    rows = [line for line in SETTINGS_PAGE.read_text().splitlines() if line.startswith("| `")]
    table = {re.findall(r"`([^`]+)`", row)[0]: row for row in rows}
    for param in PARAMS:
        assert param.name in table, f"docs/settings.md's table lacks {param.name}"
        row = table[param.name]
        for var in (param.env, *param.otel_env):
            assert var in row, f"docs/settings.md's row of {param.name} lacks {var}"
        default = ",".join(param.default) if isinstance(param.default, tuple) else param.default
        if isinstance(default, bool):
            default = str(default).lower()
        if default not in (None, ""):
            assert f"`{default}`" in row, f"docs/settings.md's row of {param.name} lacks default {default!r}"


def test_an_inert_otel_variable_is_one_warning_and_the_settings_resolve() -> None:
    env = {"OTEL_BSP_EXPORT_TIMEOUT": "30000", "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans",
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}
    settings = resolve_settings({}, env)
    named = [next(name for name in env if f"variable {name}=" in line) for line in settings.environment_warnings]
    assert named == ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_BSP_EXPORT_TIMEOUT"]
    assert settings == resolve_settings({}, {})  # nothing else differs: a repeat setup() sees the same settings


def test_a_refusal_still_wins_over_warnings() -> None:
    with pytest.raises(ConfigError, match="OTEL_CONFIG_FILE") as info:
        resolve_settings({}, {"OTEL_BSP_EXPORT_TIMEOUT": "1", "OTEL_CONFIG_FILE": "/etc/otel.yaml"})
    assert info.value.setting == "OTEL_CONFIG_FILE"


def test_setup_says_each_warning_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    from qm_otel.launch import bootstrap

    message = "qm-otel: environment variable OTEL_TEST_ONLY='1' has no effect here: a test"
    bootstrap._warn_once((message,))
    bootstrap._warn_once((message,))  # a setup() after shutdown() in the same process
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.getMessage() == message]
    assert said == [("qm_otel", "WARNING", message)]


def test_on_config_error_is_not_a_setup_keyword() -> None:
    with pytest.raises(ConfigError) as info:
        qm_otel.setup(on_config_error="disable")  # type: ignore[call-arg]
    message = str(info.value)
    assert "'on_config_error' is not a setup() argument (got 'disable')" in message
    assert "QM_OTEL_ON_CONFIG_ERROR" in message
    assert info.value.setting == "on_config_error"
    assert _state.PIPELINE.get() is None
    assert resolve_settings({}, {"QM_OTEL_ON_CONFIG_ERROR": "exit"}).on_config_error == "exit"  # the variable stays
