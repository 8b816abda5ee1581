"""Issue 21, start-up: ``setup()`` with the OTLP/HTTP exporters imports no HTTP client and no protobuf module.

Each signal's SDK exporter (and with it ``requests``, urllib3 and the protobuf modules) is made by
its delivery's sender thread when it first has something to send. These check, in fresh
interpreters against a real receiver, that the first export still arrives, that a bad exporter
setting still fails ``setup()`` naming the setting, and that flush, shutdown and fork behave when
nothing was exported yet.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

#: what making the SDK's OTLP/HTTP exporters imports
HEAVY = ("requests", "urllib3", "google.protobuf", "opentelemetry.exporter.otlp.proto.common",
         "opentelemetry.exporter.otlp.proto.http.trace_exporter",
         "opentelemetry.exporter.otlp.proto.http._log_exporter",
         "opentelemetry.exporter.otlp.proto.http.metric_exporter")


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True,
                            text=True, timeout=120, check=False, cwd=svc.ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The ``key: value`` lines a script printed."""
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


FIRST_EXPORT = """
    import logging, sys
    import qm_otel
    from opentelemetry import trace

    heavy = {heavy!r}
    telemetry = qm_otel.setup(log_format="none")
    print("after setup:", sorted(m for m in heavy if m in sys.modules))
    with trace.get_tracer("startup").start_as_current_span("first-work"):
        logging.getLogger("startup").warning("first record")
    qm_otel.cache_hit("startup")
    print("flushed:", telemetry.force_flush(30))
    print("requests after the first export:", "requests" in sys.modules)
    print("shut down:", qm_otel.shutdown(timeout_s=30))
"""


def test_setup_imports_no_http_client_and_the_first_export_still_arrives(receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000", OTEL_BLRP_SCHEDULE_DELAY="600000",
                       QM_OTEL_METRIC_EXPORT_INTERVAL="600000")
    printed = lines(run(FIRST_EXPORT.format(heavy=HEAVY), env))
    assert printed == {"after setup": "[]", "flushed": "True", "requests after the first export": "True",
                       "shut down": "True"}
    spans, logs, points = receiver.snapshot()
    assert [s.name for s in spans if s.name == "first-work"] == ["first-work"]
    assert "first record" in [g.body for g in logs]
    assert any(str(g.body).startswith("Ready in") for g in logs)  # the start-up checkpoints too
    assert any(p.name == "qm_otel.cache.requests" for p in points)


BAD_SETTINGS = """
    import os, sys
    import qm_otel
    from qm_otel.core.config import ConfigError

    for assignment in sys.argv[1:]:
        name, _, value = assignment.partition("=")
        os.environ[name] = value
        try:
            qm_otel.setup(log_format="none")
        except ConfigError as exc:
            print(f"{{name}}: {{exc.setting}} | {{exc}}")
        else:
            print(f"{{name}}: accepted")
            qm_otel.shutdown()
        del os.environ[name]
    print("imported:", sorted(m for m in {heavy!r} if m in sys.modules))
"""


def test_a_bad_exporter_setting_fails_setup_naming_it_without_importing_an_http_client(tmp_path: Path) -> None:
    cases = {
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-token",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "soon",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "missing-ca.pem"),
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": str(tmp_path / "missing-cert.pem"),
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "ftp://collector:4318/v1/metrics",
        "QM_OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
    }
    env = svc.base_env("http://127.0.0.1:9")
    printed = lines(run(BAD_SETTINGS.format(heavy=HEAVY), env, *(f"{k}={v}" for k, v in cases.items())))
    expected_setting = {name: name for name in cases} | {"QM_OTEL_EXPORTER_OTLP_ENDPOINT": "exporter_endpoint"}
    for name, value in cases.items():
        setting, _, message = printed[name].partition(" | ")
        assert setting == expected_setting[name], printed[name]
        assert repr(value) in message, printed[name]
    assert printed["imported"] == "[]"


def test_a_credential_provider_that_fails_fails_setup_naming_its_variable(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_provider.py").write_text("def session():\n    return object()  # not a requests.Session\n")
    svc.registering_distribution(site, "broken-provider", "opentelemetry_otlp_credential_provider", "broken",
                                 "broken_provider:session")
    env = svc.base_env("http://127.0.0.1:9")
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    variable = "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER"
    printed = lines(run(BAD_SETTINGS.format(heavy=HEAVY), env, f"{variable}=broken"))
    setting, _, message = printed[variable].partition(" | ")
    assert setting == variable
    assert "'broken'" in message
    assert "requests.Session" in message


NOTHING_YET = """
    import sys, time
    import qm_otel

    telemetry = qm_otel.setup(log_format="none", metrics_exporter="none", logs_exporter="none")
    started = time.monotonic()
    print("flushed:", telemetry.force_flush(5))
    print("shut down:", qm_otel.shutdown())
    print("quick:", time.monotonic() - started < 2)
    print("imported:", sorted(m for m in {heavy!r} if m in sys.modules))
"""


def test_flush_and_shutdown_with_nothing_to_send_make_no_exporter(receiver: OtlpReceiver) -> None:
    printed = lines(run(NOTHING_YET.format(heavy=HEAVY), svc.base_env(receiver.endpoint)))
    assert printed == {"flushed": "True", "shut down": "True", "quick": "True", "imported": "[]"}
    assert receiver.snapshot() == ([], [], [])


SHUTDOWN_FIRST = """
    import qm_otel

    qm_otel.setup(log_format="none")
    print("shut down:", qm_otel.shutdown(timeout_s=30))
"""


def test_a_shutdown_before_any_export_makes_the_exporters_and_sends_what_setup_recorded(
        receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint, OTEL_BLRP_SCHEDULE_DELAY="600000", QM_OTEL_METRIC_EXPORT_INTERVAL="600000")
    assert lines(run(SHUTDOWN_FIRST, env)) == {"shut down": "True"}
    _spans, logs, points = receiver.snapshot()
    assert any(str(g.body).startswith("Ready in") for g in logs)
    assert any(p.name == "qm_otel.startup.duration" for p in points), sorted({p.name for p in points})


FORK = """
    import logging, os, sys
    import qm_otel
    from opentelemetry import trace

    telemetry = qm_otel.setup(log_format="none")
    tracer = trace.get_tracer("fork-test")
    if sys.argv[1] == "after-export":
        with tracer.start_as_current_span("parent-before"):
            pass
        assert telemetry.force_flush(30)
    deliveries = telemetry.deliveries
    parents = {delivery.signal: delivery._exporter for delivery in deliveries}
    print("parent made:", sorted(signal for signal, made in parents.items() if made is not None), flush=True)
    pid = os.fork()
    if pid == 0:
        with tracer.start_as_current_span("child-work"):
            logging.getLogger("fork").warning("child record")
        ok = qm_otel.shutdown(timeout_s=30)
        own = all(d._exporter is not None and d._exporter is not parents[d.signal] for d in deliveries)
        os._exit(0 if ok and own else 3)
    _, status = os.waitpid(pid, 0)
    print("child:", os.waitstatus_to_exitcode(status), flush=True)
    with tracer.start_as_current_span("parent-after"):
        pass
    print("shut down:", qm_otel.shutdown(timeout_s=30))
"""


@pytest.mark.parametrize(("when", "made_before"), [("before-export", "[]"),
                                                   ("after-export", "['logs', 'metrics', 'traces']")])
def test_a_forked_child_makes_its_own_exporters(receiver: OtlpReceiver, when: str, made_before: str) -> None:
    env = svc.base_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000", OTEL_BLRP_SCHEDULE_DELAY="600000",
                       QM_OTEL_METRIC_EXPORT_INTERVAL="600000")
    printed = lines(run(FORK, env, when))
    assert printed == {"parent made": made_before, "child": "0", "shut down": "True"}
    spans, logs, _ = receiver.snapshot()
    names = sorted(s.name for s in spans)
    assert names == sorted(["child-work", "parent-after", *(["parent-before"] if when == "after-export" else [])])
    assert "child record" in [g.body for g in logs]


ENVIRONMENTS = [
    {},
    {"OTEL_EXPORTER_OTLP_HEADERS": "x-all=1,x-encoded=a%20b", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-traces=2",
     "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "Deflate ",
     "OTEL_EXPORTER_OTLP_TIMEOUT": "7", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2.5",
     "OTEL_EXPORTER_OTLP_CERTIFICATE": "ca.pem", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "traces-ca.pem",
     "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "client.pem", "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY": "logs.key",
     "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics.example:4318/custom/"},
]


@pytest.mark.parametrize("environ", ENVIRONMENTS)
@pytest.mark.parametrize("signal_name", ["traces", "metrics", "logs"])
def test_the_exporter_made_later_is_the_one_the_sdk_makes_from_the_same_environment(
        monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], signal_name: str) -> None:
    """The settings read at setup() (without the SDK's helpers) are the ones the SDK's exporter reads itself."""
    from qm_otel.signals import exporters

    for name in [name for name in os.environ if name.startswith(("OTEL_", "QM_OTEL_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318/")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # what signal_endpoint() gives: the per-signal variable's URL is left to the exporter
    per_signal = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT" in environ
    endpoint = None if per_signal else f"http://collector.example:4318/v1/{signal_name}"
    _console, http_path, _grpc = exporters._EXPORTERS[signal_name]
    lazy = exporters._lazy_target(signal_name, http_path, endpoint)
    assert lazy is not None
    target, preferences = lazy
    module_name, _, class_name = http_path.partition(":")
    sdk = getattr(importlib.import_module(module_name), class_name)(endpoint=endpoint)
    made = target.build()
    try:
        ours, theirs = made._client, sdk._client
        assert target.endpoint == ours._endpoint == theirs._endpoint
        assert (ours._headers, ours._timeout, ours._compression) == (theirs._headers, theirs._timeout,
                                                                      theirs._compression)
        assert (ours._transport._session.verify, ours._transport._session.cert) == (
            theirs._transport._session.verify, theirs._transport._session.cert)
        assert target.max_request_size == made._max_request_size == sdk._max_request_size
        if signal_name == "metrics":
            assert preferences["preferred_temporality"] == sdk._preferred_temporality
            assert {k: type(v) for k, v in preferences["preferred_aggregation"].items()} == {
                k: type(v) for k, v in sdk._preferred_aggregation.items()}
    finally:
        made.shutdown()
        sdk.shutdown()


def test_another_sdk_release_gets_its_exporters_made_at_setup_and_still_delivers(
        monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    """Only the release the lazy path was checked against gets it; another is made and checked at once."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from qm_otel.core.config import resolve_settings
    from qm_otel.signals import exporters
    from qm_otel.signals.delivery import SpanDelivery

    monkeypatch.setattr(exporters, "_LAZY_RELEASE", "0.0.")
    settings = resolve_settings({"exporter_endpoint": receiver.endpoint}, {})
    delivery, = exporters.exporters(settings, "traces")
    assert isinstance(delivery, SpanDelivery)
    assert delivery._exporter is not None  # made at setup()
    again = delivery._target.build()  # what a forked child gets: one of its own
    assert again is not delivery._exporter
    again.shutdown()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(delivery))
    with provider.get_tracer("startup").start_as_current_span("eager-work"):
        pass
    provider.force_flush()
    assert delivery.flush(10)
    provider.shutdown()
    assert [s.name for s in receiver.snapshot()[0]] == ["eager-work"]
