"""Issue 22, item 5, against real services: a collector that refuses every batch gets one ERROR per signal, no loop.

Before: each refused logs batch's ERROR was itself a log record, exported to the same collector,
refused and logged again (a line per batch, forever; 219 lines in 20 s of an idle service exporting
every 100 ms). Now: one ERROR per signal naming the endpoint, the status and the likely fix, then a
summary per period (shortened here to 1.5 s; a minute by default), one INFO when a batch is accepted
again; the refusal reports are written, never exported.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

SIGNALS = ("traces", "metrics", "logs")
SUMMARY_S = 1.5
#: the test app with the summary period shortened (the delivery reads drops.REFUSED_SUMMARY_S when it reports)
APP = f"""
import qm_otel.signals.drops

qm_otel.signals.drops.REFUSED_SUMMARY_S = {SUMMARY_S}

from tests.integration.apps.with_setup import app
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "refused_app.py").write_text(APP)
    return str(tmp_path)


def start(app_dir: str, endpoint: str, **extra: str) -> svc.Service:
    env = svc.base_env(endpoint, PYTHONPATH=f"{app_dir}:{svc.ROOT}", **extra)
    return svc.start("refused_app:app", env)


def export_reports(service: svc.Service) -> list[dict[str, str]]:
    return [record for line in service.output().splitlines() if line.startswith("{")
            and (record := json.loads(line)).get("logger") == "qm_otel.export"]


def of(reports: list[dict[str, str]], level: str, signal_name: str) -> list[str]:
    """The messages at ``level`` about ``signal_name``'s batches ("a logs batch", "3 logs batches", …)."""
    return [r["message"] for r in reports if r["level"] == level and f" {signal_name} batch" in r["message"]]


def load(service: svc.Service, requests: int = 200) -> None:
    """``requests`` requests, 8 at a time, over one client (``Service.get`` makes a client per call: 85 ms)."""
    with httpx.Client(base_url=service.url, timeout=30) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda n: client.get(f"/work/{n}").status_code, range(requests))) == {200}


#: per case: the receiver's mode, the service's endpoints (from the receiver's URL), the status, and per
#: signal what the ERROR's hint says
CASES = {
    "404 (a gateway prefix; a per-signal endpoint without /v1/traces)": (
        "not_found", lambda url: {"OTEL_EXPORTER_OTLP_ENDPOINT": f"{url}/gateway",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{url}/otlp"}, "HTTP 404 Not Found",
        {"traces": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is used as it is and must end in /v1/traces (e.g. "
                   "http://127.0.0.1:",
         "metrics": "any path prefix a gateway in front of the collector expects",
         "logs": "any path prefix a gateway in front of the collector expects"}),
    "401 (no credentials)": (
        "unauthorized", lambda url: {"OTEL_EXPORTER_OTLP_ENDPOINT": url}, "HTTP 401 Unauthorized",
        dict.fromkeys(SIGNALS, "asks for credentials and no header is configured: set the one it expects, e.g. "
                               "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>")),
    "413 (too large)": (
        "too_large", lambda url: {"OTEL_EXPORTER_OTLP_ENDPOINT": url}, "HTTP 413 Request Entity Too Large",
        {"traces": "send smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)", "metrics": "export fewer series",
         "logs": "send smaller batches (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE)"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refusing_collector_gets_one_error_per_signal_and_no_loop_idle_and_under_load(
    receiver: OtlpReceiver, app_dir: str, case: str
) -> None:
    mode, endpoints, status, hints = CASES[case]
    receiver.set_mode(mode)
    environment = endpoints(receiver.endpoint)
    with start(app_dir, environment.pop("OTEL_EXPORTER_OTLP_ENDPOINT"), **environment) as service:
        began = time.monotonic()
        time.sleep(3)  # idle: 10 metric exports (every 300 ms), 30 log schedules (every 100 ms)
        idle = export_reports(service)
        load(service)
        time.sleep(2)
    elapsed = time.monotonic() - began
    reports = export_reports(service)
    assert len(of(idle, "ERROR", "metrics")) == 1, idle  # metrics are exported while idle, and refused
    for signal_name in SIGNALS:
        (error,) = of(reports, "ERROR", signal_name)
        url = {"traces": environment.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")}.get(signal_name) or (
            f"{receiver.endpoint}{'/gateway' if mode == 'not_found' else ''}/v1/{signal_name}")
        assert error.startswith(f"qm-otel: the collector at {url} refused a {signal_name} batch ({status}); "), error
        assert hints[signal_name] in error, error
        assert error.endswith(f"further refusals are summarised every {SUMMARY_S:.0f} s"), error
        # no loop: at most one summary per period after the ERROR (and one at shutdown), never an INFO
        assert len(of(reports, "WARNING", signal_name)) <= elapsed / SUMMARY_S + 2, reports
        assert of(reports, "INFO", signal_name) == []
    assert of(reports, "WARNING", "metrics"), reports  # refused again and again: summarised
    assert len(reports) <= 3 + 3 * (elapsed / SUMMARY_S + 2)  # before: a line per refused batch (hundreds)
    # every refused request was decoded: the application's records were sent, qm-otel's reports never were
    bodies = [str(log.body) for log in receiver.refused_logs]
    assert any(body.startswith("working ") for body in bodies)
    assert not [body for body in bodies if body.startswith("qm-otel: the collector")]
    assert sum(receiver.refused_requests.values()) >= 3
    assert "Traceback" not in service.errors()


def test_a_collector_that_accepts_again_gets_the_recovery_line_and_the_telemetry(
    receiver: OtlpReceiver, app_dir: str
) -> None:
    receiver.set_mode("unauthorized")
    with start(app_dir, receiver.endpoint) as service:
        load(service, 20)
        time.sleep(1)
        receiver.set_mode("ok")
        load(service, 20)
        receiver.wait_for(lambda r: sum(1 for log in r.snapshot()[1] if str(log.body).startswith("working ")) >= 20
                          and sum(1 for span in r.snapshot()[0] if span.kind == 2) >= 20, timeout_s=20)
        receiver.wait_for(lambda r: r.snapshot()[2], timeout_s=10)  # metrics flow too
        time.sleep(0.5)
    reports = export_reports(service)
    for signal_name in SIGNALS:
        assert len(of(reports, "ERROR", signal_name)) == 1, reports
        (recovered,) = of(reports, "INFO", signal_name)
        assert recovered.startswith(f"qm-otel: the collector at {receiver.endpoint}/v1/{signal_name} accepts "
                                    f"{signal_name} batches again, after "), recovered
        assert "s of refusals (HTTP 401 Unauthorized); " in recovered
    # the refusal reports never travelled, neither to the refusing collector nor after it accepted again
    bodies = [str(log.body) for log in receiver.refused_logs + receiver.snapshot()[1]]
    assert not [body for body in bodies if "refused" in body]


def test_what_the_sender_threads_log_is_never_exported_so_an_idle_service_stays_idle(
    receiver: OtlpReceiver, app_dir: str
) -> None:
    """At DEBUG the HTTP client logs a line per request: exported, each would make the next request."""
    with start(app_dir, receiver.endpoint, QM_OTEL_LOG_LEVEL="DEBUG") as service:
        assert service.get("/work/1").status_code == 200
        time.sleep(1.5)  # the request's telemetry and start-up's records sent
        before = (len(receiver.snapshot()[1]), receiver.requests)
        time.sleep(3)  # idle: 30 export intervals of logs and spans
        after = (len(receiver.snapshot()[1]), receiver.requests)
    output = service.output()
    assert "urllib3.connectionpool" in output  # the DEBUG lines are written...
    assert not [log for log in receiver.snapshot()[1] if '"POST /v1/' in str(log.body)]  # ...never exported
    assert after[0] - before[0] <= 2, (before, after)  # no record begets a record
    # metrics every 300 ms (about 10 in 3 s, a collection or two of slack); no log or span batch
    assert after[1] - before[1] <= 12, (before, after)
