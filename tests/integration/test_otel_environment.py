"""Issue 14, item 4: every ``OTEL_*`` variable the installed SDK documents is honoured, refused or warned by name.

The variables are enumerated from the installed modules (``opentelemetry.environment_variables`` and
``opentelemetry.sdk.environment_variables``); docs/otel-environment.md has one row per variable naming
the test that covers it, and :func:`test_the_table_lists_every_variable_the_sdk_documents` checks
both sets are equal. Honoured variables are set to non-default values, many at once, in three real
uvicorn services whose effects are checked at real OTLP receivers (HTTP and gRPC); refused and
invalid values fail ``resolve_settings`` (what ``setup()`` and the ``opentelemetry-instrument`` path
call) with a message naming the variable, the value and what is allowed. Variables that have no effect
under qm-otel (issue 22, item 2: typically carried over from the stock distro) are warned about once and
the service runs: :func:`test_carried_over_variables` serves and exports with them on both launch paths.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import opentelemetry.environment_variables as api_variables
import opentelemetry.sdk.environment_variables as sdk_variables
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qm_otel.core.config import ConfigError, resolve_settings
from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

DOC = svc.ROOT / "docs" / "otel-environment.md"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def documented_variables() -> set[str]:
    """Every ``OTEL_*`` variable the installed API and SDK declare (their constants, private ones too)."""
    found = set()
    for module in (api_variables, sdk_variables):
        for name, value in vars(module).items():
            if isinstance(value, str) and value.startswith("OTEL_") and name.lstrip("_") == value:
                found.add(value)
    return found


@pytest.fixture
def rx_grpc() -> Iterator[tuple[OtlpReceiver, int]]:
    """A second receiver, listening for OTLP/gRPC (its port with it)."""
    with OtlpReceiver() as server:
        yield server, server.start_grpc()


def _credential_provider(root: Path) -> str:
    """A directory registering ``itest_session`` (the test app's requests.Session) as a credential provider."""
    return svc.registering_distribution(root, "qm-otel-test-credentials", "opentelemetry_otlp_credential_provider",
                                        "itest_session", "tests.integration.apps.otel_environment:session")


def _files(root: Path, *names: str) -> list[str]:
    paths = []
    for name in names:
        path = root / name
        path.write_text(f"{name}: only read when the endpoint is https\n")
        paths.append(str(path))
    return paths


def _spans(message: Any) -> list[Any]:
    return [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _records(message: Any) -> list[Any]:
    return [record for rl in message.resource_logs for sl in rl.scope_logs for record in sl.log_records]


def _metrics(message: Any) -> list[Any]:
    return [metric for rm in message.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics]


def _resource(message: Any, field: str) -> dict[str, Any]:
    from tests.support.otlp_receiver import attributes

    return attributes(getattr(message, field)[0].resource.attributes)


def _keys(pairs: Any) -> dict[str, Any]:
    from tests.support.otlp_receiver import attributes

    return attributes(pairs)


APP = "tests.integration.apps.otel_environment:app"


# --- group A: the setup() path, traces and logs over HTTP, metrics over gRPC ----------------------


def test_setup_path(receiver: OtlpReceiver, rx_grpc: tuple[OtlpReceiver, int], tmp_path: Path) -> None:
    metrics_rx, grpc_port = rx_grpc
    ca, cert, key = _files(tmp_path, "ca.pem", "client.pem", "client.key")
    env = svc.base_env(receiver.endpoint, **{
        "OTEL_ENV_APP_SETUP": "1", "OTEL_SERVICE_NAME": "envtest", "OTEL_SDK_DISABLED": "false",
        "OTEL_RESOURCE_ATTRIBUTES": "team=payments,note=a%20b",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-all=1,x-encoded=a%20b", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-traces=2",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "7", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "4", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-metrics=3",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": ca, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": cert,
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": key,
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "itest_session",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "3", "OTEL_BSP_MAX_QUEUE_SIZE": "4096", "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "5", "OTEL_BLRP_MAX_QUEUE_SIZE": "3000", "OTEL_BLRP_SCHEDULE_DELAY": "150",
        "OTEL_METRIC_EXPORT_INTERVAL": "400", "OTEL_METRIC_EXPORT_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
        "OTEL_METRICS_EXEMPLAR_FILTER": "always_off",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "5", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "10",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "2", "OTEL_SPAN_LINK_COUNT_LIMIT": "3", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1",
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "2", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "4",
        "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "8",
        "OTEL_PROPAGATORS": "baggage", "OTEL_LOG_LEVEL": "error", "OTEL_LOGS_EXPORTER": "otlp,console",
        "OTEL_PYTHON_CONTEXT": "contextvars_context", "OTEL_PYTHON_ID_GENERATOR": "qm_otel",
    })
    del env["QM_OTEL_METRIC_EXPORT_INTERVAL"]  # it would win over OTEL_METRIC_EXPORT_INTERVAL
    env["PYTHONPATH"] = f"{_credential_provider(tmp_path / 'site')}:{env['PYTHONPATH']}"
    with svc.start(APP, env) as service:
        assert service.get("/limits", headers={"traceparent": TRACEPARENT}).status_code == 200
        assert service.get("/burst/10").status_code == 200
        answer = service.get("/pipeline")
        assert answer.status_code == 200, service.errors()[-3000:] + service.output()[-1500:]
        pipeline = answer.json()
        receiver.wait_for(lambda r: sum(len(_spans(m)) for _, m in r.requests_to("/v1/traces")) >= 12
                          and any(_records(m) for _, m in r.requests_to("/v1/logs")))
        metrics_rx.wait_for(lambda r: any(m.name == "http.server.request.duration" for _, msg in
                                          r.requests_to("/v1/metrics") for m in _metrics(msg)))
    traces = receiver.requests_to("/v1/traces")
    logs = receiver.requests_to("/v1/logs")
    resource = _resource(traces[0][1], "resource_spans")
    # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES (URL-decoded), OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=process
    assert (resource["service.name"], resource["team"], resource["note"]) == ("envtest", "payments", "a b")
    assert ("process.pid" in resource, "host.name" in resource) == (True, False)
    # headers, compression and the credential provider's session: per signal, the signal's own wins
    for headers, _ in traces:
        assert (headers.get("x-traces"), headers.get("x-all"), headers["content-encoding"]) == ("2", None, "deflate")
        assert headers["x-credential-provider"] == "session"
    for headers, _ in logs:
        assert (headers["x-all"], headers["x-encoded"], headers["content-encoding"]) == ("1", "a b", "gzip")
        assert {"x-credential-provider", "x-traces"}.isdisjoint(headers)
    # batch sizes: at most OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans and OTEL_BLRP_MAX_EXPORT_BATCH_SIZE records a request
    assert max(len(_spans(m)) for _, m in traces) <= 3
    assert max(len(_records(m)) for _, m in logs) <= 5
    spans = {span.name: span for _, m in traces for span in _spans(m)}
    limits = spans["limits"]
    assert len(limits.attributes) == 5  # OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
    assert limits.dropped_attributes_count >= 8  # 13 set by the app (qm-otel adds correlation.id)
    assert (len(limits.events), limits.dropped_events_count) == (2, 4)  # OTEL_SPAN_EVENT_COUNT_LIMIT
    assert (len(limits.links), limits.dropped_links_count) == (3, 3)  # OTEL_SPAN_LINK_COUNT_LIMIT
    assert all(len(event.attributes) == 1 for event in limits.events)  # OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT
    assert all(len(link.attributes) == 2 for link in limits.links)  # OTEL_LINK_ATTRIBUTE_COUNT_LIMIT
    server = spans["GET /limits"]
    assert server.trace_id.hex() != TRACEPARENT.split("-")[1]  # OTEL_PROPAGATORS=baggage: traceparent not read
    assert all(len(value) <= 10 for value in _keys(server.attributes).values() if isinstance(value, str))
    record = next(r for _, m in logs for r in _records(m) if r.body.string_value == "limits")
    assert len(record.attributes) == 4  # OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT
    assert record.dropped_attributes_count > 0
    assert all(len(v) <= 8 for v in _keys(record.attributes).values() if isinstance(v, str))
    # metrics over gRPC (OTEL_EXPORTER_OTLP_METRICS_PROTOCOL/ENDPOINT/INSECURE): delta, exponential, no exemplars
    metrics = [m for _, msg in metrics_rx.requests_to("/v1/metrics") for m in _metrics(msg)]
    duration = next(m for m in metrics if m.name == "http.server.request.duration")
    assert duration.WhichOneof("data") == "exponential_histogram"
    assert duration.exponential_histogram.aggregation_temporality == 1  # DELTA
    assert not any(p.exemplars for m in metrics if m.WhichOneof("data") in ("sum", "histogram",
               "exponential_histogram") for p in getattr(m, m.WhichOneof("data")).data_points)
    # what the pipeline was built with (for what a receiver cannot see)
    trace_exporter, = pipeline["traces"]
    assert (trace_exporter["queue"], trace_exporter["batch"], trace_exporter["delay"]) == (4096, 3, 100)
    assert (trace_exporter["timeout"], trace_exporter["verify"], trace_exporter["cert"]) == (3.0, ca, [cert, key])
    log_exporter, _console = pipeline["logs"]
    assert (log_exporter["queue"], log_exporter["batch"], log_exporter["delay"], log_exporter["timeout"]) == \
        (3000, 5, 150, 7.0)
    reader, = pipeline["metric_readers"]
    assert (reader["interval"], reader["export_timeout"], reader["timeout"]) == (400, 2500, 4.0)
    assert (reader["headers"], reader["insecure"], reader["compression"]) == ({"x-metrics": "3"}, True,
                                                                              "2")  # grpc.Compression.Gzip
    assert pipeline["sdk_log_level"] == 40  # OTEL_LOG_LEVEL=error
    assert '"severity_text": "INFO"' in service.output()  # OTEL_LOGS_EXPORTER=otlp,console


# --- group B: the opentelemetry-instrument path, gRPC by default, two signals over HTTP ---------------


def test_instrument_path(receiver: OtlpReceiver, rx_grpc: tuple[OtlpReceiver, int], tmp_path: Path) -> None:
    metrics_rx, grpc_port = rx_grpc
    ca, cert, key, logs_ca, logs_cert, logs_key = _files(
        tmp_path, "ca.pem", "client.pem", "client.key", "logs-ca.pem", "logs-client.pem", "logs-client.key")
    prometheus_port = svc.free_port()
    env = svc.base_env(f"http://127.0.0.1:{grpc_port}", **{
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.endpoint}/v1/traces",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{receiver.endpoint}/v1/logs",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "x-logs=4", "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "deflate",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "5",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": ca, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": cert,
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": key, "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE": logs_ca,
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE": logs_cert, "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY": logs_key,
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER": "itest_session",
        "OTEL_TRACES_SAMPLER": "parentbased_always_off",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "6", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "12",
        "OTEL_METRICS_EXEMPLAR_FILTER": "always_on",
        "OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_METRICS_EXPORTER": "otlp,prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(prometheus_port),
    })
    env["PYTHONPATH"] = f"{_credential_provider(tmp_path / 'site')}:{env['PYTHONPATH']}"
    with svc.start(APP, env, zero_code=True) as service:
        assert service.get("/limits").status_code == 200  # a root: parentbased_always_off drops it
        assert service.get("/limits", headers={"traceparent": TRACEPARENT}).status_code == 200
        pipeline = service.get("/pipeline").json()
        scrape = httpx.get(f"http://127.0.0.1:{prometheus_port}/metrics", timeout=10)
        receiver.wait_for(lambda r: any(s.name == "limits" for s in r.snapshot()[0])
                          and any(rec.body.string_value == "limits" for _, m in r.requests_to("/v1/logs")
                                  for rec in _records(m)))
        metrics_rx.wait_for(lambda r: any(p.name == "http.server.request.duration" for p in r.snapshot()[2]))
        time.sleep(0.5)  # a dropped root span would have arrived by now
    spans = [span for _, m in receiver.requests_to("/v1/traces") for span in _spans(m)]
    # OTEL_TRACES_SAMPLER=parentbased_always_off: only the request with a sampled parent was kept
    assert {span.trace_id.hex() for span in spans} == {TRACEPARENT.split("-")[1]}
    limits = next(span for span in spans if span.name == "limits")
    assert len(limits.attributes) == 6  # OTEL_ATTRIBUTE_COUNT_LIMIT
    assert limits.dropped_attributes_count >= 7
    assert max(len(v) for v in _keys(limits.attributes).values() if isinstance(v, str)) <= 12
    logs = receiver.requests_to("/v1/logs")
    record = next(r for _, m in logs for r in _records(m) if r.body.string_value == "limits")
    assert len(record.attributes) == 6  # OTEL_ATTRIBUTE_COUNT_LIMIT applies to log records too
    assert _keys(record.attributes)["long"] == "y" * 12  # OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT
    for headers, _ in logs:  # the logs' own headers, compression and credential provider
        assert (headers["x-logs"], headers["content-encoding"], headers["x-credential-provider"]) == \
            ("4", "deflate", "session")
    for headers, _ in receiver.requests_to("/v1/traces"):
        assert {"x-credential-provider", "x-logs"}.isdisjoint(headers)
    # metrics over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, OTEL_EXPORTER_OTLP_INSECURE), with exemplars (always_on)
    metrics = [m for _, msg in metrics_rx.requests_to("/v1/metrics") for m in _metrics(msg)]
    duration = next(m for m in metrics if m.name == "http.server.request.duration")
    assert any(point.exemplars for point in duration.histogram.data_points)
    resource = _resource(metrics_rx.requests_to("/v1/metrics")[0][1], "resource_metrics")
    assert "host.name" in resource  # qm-otel's default detectors when OTEL_EXPERIMENTAL_RESOURCE_DETECTORS is unset
    assert scrape.status_code == 200
    assert "http_server_request_duration" in scrape.text  # prometheus host/port
    assert '"name": "limits"' in service.output()  # OTEL_TRACES_EXPORTER=otlp,console
    trace_exporter, _console = pipeline["traces"]
    assert (trace_exporter["verify"], trace_exporter["cert"]) == (ca, [cert, key])  # the general TLS files
    log_exporter, = pipeline["logs"]
    assert (log_exporter["verify"], log_exporter["cert"], log_exporter["timeout"]) == (logs_ca, [logs_cert, logs_key],
                                                                                      5.0)


# --- group C: OTEL_SDK_DISABLED ---------------------------------------------------------------------


def test_sdk_disabled(receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint, OTEL_ENV_APP_SETUP="1", OTEL_SDK_DISABLED="true")
    with svc.start(APP, env) as service:
        assert service.get("/limits").status_code == 200
        time.sleep(1.5)  # ten schedule delays and five metric intervals of base_env
    assert receiver.raw == []  # nothing exported
    assert '"message":"limits"' in service.output()  # stdout logs stay


# --- variables carried over from the stock distro: one WARNING each, and the service serves and exports ---

#: what a deployment moved from the stock distro typically still sets (issue 22, item 2)
CARRIED_OVER = {
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",  # what qm-otel does anyway: not even warned
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans",
    "OTEL_BSP_EXPORT_TIMEOUT": "30000",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",  # over HTTP
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true",
}


@pytest.mark.parametrize("zero_code", [False, True], ids=["setup", "instrument"])
def test_carried_over_variables(receiver: OtlpReceiver, zero_code: bool) -> None:
    env = svc.base_env(receiver.endpoint, **CARRIED_OVER)
    if not zero_code:
        env["OTEL_ENV_APP_SETUP"] = "1"
    with svc.start(APP, env, zero_code=zero_code) as service:
        for _ in range(2):
            assert service.get("/limits").status_code == 200
        assert service.get("/burst/5").status_code == 200
        receiver.wait_for(lambda r: len(r.snapshot()[0]) >= 10 and sum(
            rec.body.string_value == "burst 4" for _, m in r.requests_to("/v1/logs") for rec in _records(m))
                          and r.snapshot()[2])
        time.sleep(0.5)  # a duplicate record (a second handler) would have arrived by now
    assert "Traceback" not in service.errors(), service.errors()
    bodies = [rec.body.string_value for _, m in receiver.requests_to("/v1/logs") for rec in _records(m)]
    # one OTLP handler: each call is exported once (the SDK's deprecated handler would export it again)
    assert bodies.count("limits") == 2, bodies
    assert [bodies.count(f"burst {i}") for i in range(5)] == [1] * 5
    assert {s.name for s in receiver.snapshot()[0]} >= {"GET /limits", "limits", "burst-4"}
    assert any(p.name == "http.server.request.duration" for p in receiver.snapshot()[2])
    # one WARNING per inert variable, naming it, on stdout and exported like any record; none for `true` logging
    lines = [line for line in service.output().splitlines() if "has no effect here" in line]
    warned = sorted(name for name in CARRIED_OVER if any(f"variable {name}=" in line for line in lines))
    assert warned == sorted(set(CARRIED_OVER) - {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"}), lines
    assert len(lines) == len(warned), lines
    assert all('"level":"WARNING","logger":"qm_otel"' in line for line in lines), lines
    exported = [body for body in bodies if "has no effect here" in body]
    assert len(exported) == len(warned), exported
    assert "log pipeline: 1 root handler(s)" in service.output()  # qm-otel's; no SDK handler beside it
    assert "LoggingHandler" not in service.output() + service.errors()  # the logging instrumentor never ran


# --- refused and invalid values: setup() fails naming the variable, the value and what is allowed -------

#: variables qm-otel refuses whatever their value (the docs table says why)
REFUSED = {
    "OTEL_CONFIG_FILE": "/etc/otel.yaml",
    "OTEL_PYTHON_TRACER_CONFIGURATOR": "mine",
    "OTEL_PYTHON_METER_CONFIGURATOR": "mine",
    "OTEL_PYTHON_LOGGER_CONFIGURATOR": "mine",
}

_GRPC = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}

#: variables refused for one value, or in one situation, and allowed otherwise (the docs table says which)
REFUSED_HERE: dict[str, tuple[str, dict[str, str]]] = {
    "OTEL_PYTHON_TRACER_PROVIDER": ("default_tracer_provider", {}),
    "OTEL_PYTHON_METER_PROVIDER": ("default_meter_provider", {}),
    "OTEL_PYTHON_LOGGER_PROVIDER": ("custom", {}),
    "OTEL_PYTHON_ID_GENERATOR": ("xray", {}),
    # `false` asks for TLS; over HTTP to an http:// URL that would be clear text
    "OTEL_EXPORTER_OTLP_INSECURE": ("false", {}),
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": ("false", {}),
    "OTEL_EXPORTER_OTLP_METRICS_INSECURE": ("false", {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/m"}),
    "OTEL_EXPORTER_OTLP_LOGS_INSECURE": ("false", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": ("SOMETIMES", _GRPC),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER": ("mine", _GRPC),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_TRACES_CREDENTIAL_PROVIDER": ("mine", _GRPC),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_METRICS_CREDENTIAL_PROVIDER": ("mine", _GRPC),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_LOGS_CREDENTIAL_PROVIDER": ("mine", _GRPC),
}

#: variables that have no effect under qm-otel as set: setup() goes on, with one warning naming each
WARNED: dict[str, tuple[str, dict[str, str]]] = {
    "OTEL_BSP_EXPORT_TIMEOUT": ("1000", {}),
    "OTEL_BLRP_EXPORT_TIMEOUT": ("1000", {}),
    "OTEL_PYTHON_ID_GENERATOR": ("random", {}),
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": ("true", {}),
    "OTEL_TRACES_SAMPLER_ARG": ("0.5", {"OTEL_TRACES_SAMPLER": "always_on"}),
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": ("http://zipkin:9411/api/v2/spans", {}),
    "OTEL_EXPORTER_ZIPKIN_TIMEOUT": ("10", {}),
    "OTEL_EXPORTER_OTLP_INSECURE": ("true", {}),
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": ("true", {}),
    "OTEL_EXPORTER_OTLP_METRICS_INSECURE": ("false", {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318"}),
    "OTEL_EXPORTER_OTLP_LOGS_INSECURE": ("true", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": ("UNAVAILABLE", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER": ("mine", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_TRACES_CREDENTIAL_PROVIDER": ("mine", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_METRICS_CREDENTIAL_PROVIDER": ("mine", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_LOGS_CREDENTIAL_PROVIDER": ("mine", {}),
}
#: a value each honoured variable does not accept
INVALID: dict[str, tuple[str, dict[str, str]]] = {
    "OTEL_SDK_DISABLED": ("yes", {}),
    "OTEL_RESOURCE_ATTRIBUTES": ("team=payments,oops", {}),
    "OTEL_SERVICE_NAME": ("x" * 300, {}),
    "OTEL_LOG_LEVEL": ("loud", {}),
    "OTEL_TRACES_SAMPLER": ("sometimes", {}),
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": ("host,k8s", {}),
    "OTEL_PROPAGATORS": ("tracecontext,b3", {}),
    "OTEL_PYTHON_CONTEXT": ("threadlocal_context", {}),
    "OTEL_TRACES_EXPORTER": ("zipkin", {}),
    "OTEL_METRICS_EXPORTER": ("statsd", {}),
    "OTEL_LOGS_EXPORTER": ("otlp,none", {}),
    "OTEL_EXPORTER_PROMETHEUS_HOST": (" " * 2 + "x" * 300, {}),
    "OTEL_EXPORTER_PROMETHEUS_PORT": ("70000", {}),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("collector:4318", {}),
    "OTEL_EXPORTER_OTLP_PROTOCOL": ("http/json", {}),
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": ("sometimes", {}),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": ("exponential", {}),
    "OTEL_BSP_SCHEDULE_DELAY": ("0", {}),
    "OTEL_BSP_MAX_QUEUE_SIZE": ("abc", {}),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("9000", {}),  # over qm-otel's default queue of 8192
    "OTEL_BLRP_SCHEDULE_DELAY": ("1.5", {}),
    "OTEL_BLRP_MAX_QUEUE_SIZE": ("100", {}),
    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": ("-1", {}),
    "OTEL_METRIC_EXPORT_INTERVAL": ("soon", {}),
    "OTEL_METRIC_EXPORT_TIMEOUT": ("0", {}),
    "OTEL_METRICS_EXEMPLAR_FILTER": ("sometimes", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": ("not_installed", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": ("not_installed", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER": ("not_installed", {}),
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER": ("not_installed", {}),
    **{f"OTEL_{name}_LIMIT": ("many", {}) for name in (
        "ATTRIBUTE_COUNT", "ATTRIBUTE_VALUE_LENGTH", "SPAN_ATTRIBUTE_COUNT", "SPAN_ATTRIBUTE_VALUE_LENGTH",
        "SPAN_EVENT_COUNT", "SPAN_LINK_COUNT", "EVENT_ATTRIBUTE_COUNT", "LINK_ATTRIBUTE_COUNT",
        "LOGRECORD_ATTRIBUTE_COUNT", "LOGRECORD_ATTRIBUTE_VALUE_LENGTH")},
}
for _infix in ("", "TRACES_", "METRICS_", "LOGS_"):
    INVALID.update({
        f"OTEL_EXPORTER_OTLP_{_infix}HEADERS": ("authorization", {}),
        f"OTEL_EXPORTER_OTLP_{_infix}TIMEOUT": ("10s", {}),
        f"OTEL_EXPORTER_OTLP_{_infix}COMPRESSION": ("zstd", {}),
        f"OTEL_EXPORTER_OTLP_{_infix}CERTIFICATE": ("/nonexistent/ca.pem", {}),
        f"OTEL_EXPORTER_OTLP_{_infix}CLIENT_CERTIFICATE": ("/nonexistent/client.pem", {}),
        f"OTEL_EXPORTER_OTLP_{_infix}CLIENT_KEY": ("/nonexistent/client.key", {}),
    })
    if _infix:
        INVALID[f"OTEL_EXPORTER_OTLP_{_infix}ENDPOINT"] = ("collector:4318", {})
        INVALID[f"OTEL_EXPORTER_OTLP_{_infix}PROTOCOL"] = ("http/json", {})
INVALID["OTEL_EXPORTER_OTLP_INSECURE"] = ("maybe", _GRPC)
INVALID["OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"] = ("deflate", {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"})


def _refusal(variable: str, value: str, extra: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_settings({}, {**extra, variable: value})
    message = str(caught.value)
    assert variable in message, message
    assert repr(value) in message, message
    assert "allowed: " in message, message
    return message


@pytest.mark.parametrize("variable", sorted(REFUSED))
def test_refused(variable: str) -> None:
    message = _refusal(variable, REFUSED[variable], {})
    assert "allowed: unset" in message


@pytest.mark.parametrize("variable", sorted(REFUSED_HERE))
def test_refused_here(variable: str) -> None:
    value, extra = REFUSED_HERE[variable]
    _refusal(variable, value, extra)


@pytest.mark.parametrize("variable", sorted(INVALID))
def test_invalid(variable: str) -> None:
    value, extra = INVALID[variable]
    _refusal(variable, value, extra)


@pytest.mark.parametrize("variable", sorted(WARNED))
def test_warned(variable: str) -> None:
    value, extra = WARNED[variable]
    warning, = resolve_settings({}, {**extra, variable: value}).environment_warnings
    assert warning.startswith(f"qm-otel: environment variable {variable}={value!r} has no effect here: "), warning
    assert warning.endswith("; the service runs with it ignored"), warning


@pytest.mark.parametrize("value", ["true", "false", "TRUE", "maybe"])
def test_logging_auto_instrumentation_is_accepted_silently(value: str) -> None:
    settings = resolve_settings({}, {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": value})
    assert settings.environment_warnings == ()


def test_grpc_only_variables_are_accepted_with_grpc() -> None:
    settings = resolve_settings({}, {**_GRPC, "OTEL_EXPORTER_OTLP_INSECURE": "true",
                                     "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": "unavailable,aborted"})
    assert settings.exporter_protocol == "grpc"
    with pytest.raises(ConfigError, match="OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES"):
        resolve_settings({}, {**_GRPC, "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": "SOMETIMES"})
    back_to_http = resolve_settings({}, {**_GRPC, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                                         "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"})
    assert "the traces exporter uses http/protobuf" in back_to_http.environment_warnings[0]
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_INSECURE"):  # false over HTTP to http://
        resolve_settings({}, {**_GRPC, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                              "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false"})
    resolve_settings({}, {**_GRPC, "OTEL_EXPORTER_OTLP_INSECURE": "false"})  # gRPC: honoured (TLS)


_HEADER_TEXT = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=30)


@given(st.lists(st.tuples(_HEADER_TEXT, _HEADER_TEXT), max_size=4))
def test_headers_are_accepted_exactly_when_the_sdk_parses_every_member(pairs: list[tuple[str, str]]) -> None:
    from opentelemetry.util.re import parse_env_headers

    value = ",".join(f"{name}={text}" for name, text in pairs)
    members = [member for member in value.split(",") if member.strip()]
    sdk_reads_all = all(len(parse_env_headers(member, liberal=True)) == 1 for member in members)
    if sdk_reads_all:
        resolve_settings({}, {"OTEL_EXPORTER_OTLP_HEADERS": value})
    else:
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_HEADERS"):
            resolve_settings({}, {"OTEL_EXPORTER_OTLP_HEADERS": value})


# --- the table -----------------------------------------------------------------------------------------


def _rows() -> dict[str, list[str]]:
    """docs/otel-environment.md: each row's cells by its variable."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        found = re.fullmatch(r"`(OTEL_[A-Z0-9_]+)`", cells[0]) if len(cells) == 5 else None
        if found:
            assert found.group(1) not in rows, f"{found.group(1)} has two rows"
            rows[found.group(1)] = cells
    return rows


def _table() -> dict[str, str]:
    """docs/otel-environment.md: each row's variable and the test it names."""
    return {variable: cells[4].strip("`") for variable, cells in _rows().items()}


def _verdict(variable: str) -> str:
    """What the tests show a value qm-otel cannot use, or does not need, does: the table's fourth column."""
    if variable in REFUSED:
        return "refused"
    kinds = [kind for kind, cases in (("warned", (WARNED,)), ("refused", (REFUSED_HERE, INVALID)))
             if any(variable in case for case in cases)]
    return " or ".join(kinds) or "accepted"


def test_the_table_says_for_each_variable_whether_it_is_refused_or_warned() -> None:
    """The column a deployment moved from the stock distro reads: it agrees with the cases tested below."""
    wrong = {variable: (cells[3], _verdict(variable)) for variable, cells in _rows().items()
             if cells[3] != _verdict(variable)}
    assert wrong == {}
    assert _rows()["OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"][3] == "accepted"
    assert _rows()["OTEL_BSP_EXPORT_TIMEOUT"][3] == "warned"


def test_the_table_lists_every_variable_the_sdk_documents() -> None:
    table = _table()
    assert set(table) == documented_variables(), (
        f"missing from the table: {sorted(documented_variables() - set(table))}; "
        f"not documented by the SDK: {sorted(set(table) - documented_variables())}")
    cases = {"test_refused": REFUSED, "test_refused_here": REFUSED_HERE, "test_invalid": INVALID,
             "test_warned": WARNED}
    for variable, test in table.items():
        name, _, case = test.partition("[")
        assert name.startswith("test_"), f"{variable}: no test {name}"
        assert name in globals(), f"{variable}: no test {name}"
        if case:
            assert case.rstrip("]") == variable, f"{variable}: {test} is not its case"
            assert variable in cases[name], f"{variable}: {test} is not a case"
