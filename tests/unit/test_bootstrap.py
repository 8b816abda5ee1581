"""Pieces of bootstrap that need no global state: endpoints per signal, the API's guards."""

from __future__ import annotations

import pytest

import qm_otel
from qm_otel.bootstrap import _signal_endpoint, current
from qm_otel.config import resolve_settings


def test_http_endpoints_get_the_signal_path() -> None:
    settings = resolve_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert _signal_endpoint(settings, "traces") == "http://collector:4318/v1/traces"
    assert _signal_endpoint(settings, "logs") == "http://collector:4318/v1/logs"


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
    assert current() is None
    with pytest.raises(RuntimeError, match=r"setup\(\) first"):
        qm_otel.instrument_app(object())


def test_shutdown_before_setup_is_a_no_op() -> None:
    assert qm_otel.shutdown() is True


def test_every_setting_is_a_documented_keyword_of_setup() -> None:
    import inspect

    from qm_otel.config import SETTING_NAMES

    parameters = inspect.signature(qm_otel.setup).parameters
    assert set(parameters) >= SETTING_NAMES
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    doc = qm_otel.setup.__doc__ or ""
    assert all(f"{name}:" in doc for name in SETTING_NAMES)
