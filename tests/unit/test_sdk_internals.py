"""The private SDK names qm-otel reads: all in one module, checked at setup(), each fallback said once."""

from __future__ import annotations

import ast
import importlib
import logging
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.version import __version__ as sdk_version

from qm_otel.core import sdk_internals
from qm_otel.signals import encoding, histograms

SOURCE = Path(sdk_internals.__file__).resolve().parent
#: packages the SDK publishes under an underscore (logs are still in development): their import paths are public
PUBLISHED = ("opentelemetry._logs", "opentelemetry.sdk._logs", "opentelemetry.semconv._incubating",
             "opentelemetry.exporter.otlp.proto.http._log_exporter",
             "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
             "opentelemetry.exporter.otlp.proto.common._log_encoder")


@pytest.fixture(autouse=True)
def said_afresh() -> Any:
    sdk_internals.forget_said()
    yield
    sdk_internals.forget_said()


def _published(module: str) -> bool:
    return any(module == prefix or (module.startswith(f"{prefix}.") and "._" not in module[len(prefix):])
               for prefix in PUBLISHED)


def _exported(module: str) -> list[str]:
    """The names a module lists in ``__all__``: an underscore there is the API's (e.g. ``metrics._Gauge``)."""
    return list(getattr(importlib.import_module(module), "__all__", []))


def _sdk_subclass_selves(tree: ast.Module) -> set[ast.AST]:
    """``self`` inside classes whose base comes from an ``opentelemetry`` import: their privates are the SDK's."""
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("opentelemetry") for alias in node.names}
    selves: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(isinstance(base, ast.Name) and base.id in imported
                                                  for base in node.bases):
            selves |= {name for name in ast.walk(node) if isinstance(name, ast.Name) and name.id == "self"}
    return selves


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    sdk_selves = _sdk_subclass_selves(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(SOURCE)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opentelemetry"):
            module = node.module or ""
            if "._" in module and not _published(module):
                found.append(f"{where} imports from {module}")
            found += [f"{where} imports {alias.name} from {module}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")
                      and not _published(f"{module}.{alias.name}") and alias.name not in _exported(module)]
        elif isinstance(node, ast.Import):
            found += [f"{where} imports {alias.name}" for alias in node.names
                      if alias.name.startswith("opentelemetry") and "._" in alias.name and not _published(alias.name)]
        elif isinstance(node, ast.Attribute) and node.attr in sdk_internals.PRIVATE_ATTRIBUTES:
            own = isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"} and node.value not in sdk_selves
            if not own:  # an attribute of qm-otel's own object is its own, unless the class is an SDK one's subclass
                found.append(f"{where} reads .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in {"getattr", "hasattr", "setattr"} and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in sdk_internals.PRIVATE_ATTRIBUTES):
            found.append(f"{where} {node.func.id}(…, {node.args[1].value!r})")
    return found


def test_no_other_module_reaches_into_a_private_sdk_name() -> None:
    owner = Path(sdk_internals.__file__).resolve()
    found = [use for path in sorted(SOURCE.rglob("*.py")) if path.resolve() != owner for use in _private_uses(path)]
    assert found == []


def test_the_scan_sees_each_kind_of_private_use(tmp_path: Path) -> None:
    """The ownership test can fail: each kind of use it looks for is found in a module written with one."""
    sample = SOURCE / "_scan_sample.py"
    sample.write_text("from opentelemetry.sdk.metrics._internal import x\n"
                      "from opentelemetry.trace import _SPAN_KEY\n"
                      "import opentelemetry.util._once\n"
                      "def f(exporter):\n"
                      "    exporter._client\n"
                      "    getattr(exporter, '_max_request_size', 0)\n"
                      "    self._client\n"
                      "from opentelemetry.trace.span import TraceState\n"
                      "class Checked(TraceState):\n"
                      "    def __init__(self):\n"
                      "        self._dict = {}\n")
    try:
        assert len(_private_uses(sample)) == 6
    finally:
        sample.unlink()


def test_the_installed_sdk_has_every_name_qm_otel_reads(caplog: pytest.LogCaptureFixture) -> None:
    """The day a release moves one, this fails (the newest-release run installs the newest SDK)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with caplog.at_level(logging.WARNING, logger="qm_otel"):
        assert sdk_internals.check() == {}
        for exporter in (OTLPSpanExporter(), OTLPLogExporter(), OTLPMetricExporter()):
            assert sdk_internals.check(exporter=exporter) == {}
            assert sdk_internals.exporter_endpoint(exporter).startswith("http://localhost:4318/v1/")
            assert sdk_internals.exporter_max_request_size(exporter, -1) >= 0
        assert set(sdk_internals.metric_exporter_preferences(OTLPMetricExporter())) == {
            "preferred_temporality", "preferred_aggregation"}
        assert sdk_internals.lazy_exporter_names("metrics") is not None
        assert sdk_internals.log_lane_emit(BatchLogRecordProcessor(OTLPLogExporter())) is not None
    assert caplog.records == []


def test_a_moved_name_is_said_once_with_the_sdk_version(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def init(self: Any, exporter: Any, **_: Any) -> None:
        self.queue = exporter  # no _batch_processor

    monkeypatch.setattr(BatchLogRecordProcessor, "__init__", init)
    with caplog.at_level(logging.WARNING, logger="qm_otel"):
        assert "log lane" in sdk_internals.check()
        assert "log lane" in sdk_internals.check()
        assert sdk_internals.log_lane_emit(BatchLogRecordProcessor(object())) is None
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"opentelemetry-sdk {sdk_version}" in message
    assert "log lane" in message
    assert "_batch_processor" in message
    assert "Logger.emit" in message  # what it costs instead


@pytest.mark.parametrize(("target", "name", "fast_path"), [
    (MetricReader, "_set_collect_callback", "fast histograms"),
    (sdk_internals, "HISTOGRAM_NAMES", "fast histograms"),
])
def test_each_probe_sees_its_name_move(monkeypatch: pytest.MonkeyPatch, target: Any, name: str,
                                       fast_path: str) -> None:
    if name == "HISTOGRAM_NAMES":
        monkeypatch.setattr(target, name, "ImportError: moved")
    else:
        monkeypatch.delattr(target, name)
    assert fast_path in sdk_internals.check()


def test_the_global_guards_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.metrics import _internal as metrics_api

    monkeypatch.delattr(metrics_api, "_METER_PROVIDER_SET_ONCE")
    assert "set-up again" in sdk_internals.check()


def test_without_the_histogram_names_the_sdk_instrument_records() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sdk_internals_names = sdk_internals.HISTOGRAM_NAMES
    try:
        sdk_internals.HISTOGRAM_NAMES = "ImportError: moved"
        histograms.install(provider)
    finally:
        sdk_internals.HISTOGRAM_NAMES = sdk_internals_names
    instrument = provider.get_meter("m").create_histogram("h")
    assert histograms.fast_histogram(provider, instrument) is instrument
    instrument.record(1.0)
    [metric] = [m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert metric.name == "h"


def test_an_export_without_the_encoder_keeps_the_sdk_class(caplog: pytest.LogCaptureFixture) -> None:
    class Exporter:
        def export(self, batch: Any) -> Any:
            return batch

    with caplog.at_level(logging.WARNING, logger="qm_otel"):
        assert encoding.with_fast_encoding(Exporter, "encode_spans", encoding.encode_spans) is Exporter
    assert "fast encoding" in caplog.text
    assert sdk_version in caplog.text
