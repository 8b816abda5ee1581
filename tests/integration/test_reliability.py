"""Issue 12 against real processes: hanging dependencies, a hung check, a full disk, a collector that fails."""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.polling import wait_for

APP = "tests.integration.apps.reliability:app"


@pytest.fixture
def service(receiver: OtlpReceiver) -> Iterator[svc.Service]:
    with svc.start(APP, svc.base_env(receiver.endpoint)) as running:
        yield running


# --- 1. a hanging dependency opens the breaker -------------------------------------------------


@pytest.mark.parametrize("mode", ["wait_for", "timeout", "own"])
def test_calls_cut_off_by_a_timeout_open_the_breaker_and_a_cancelled_trial_reopens_it(
    service: svc.Service, mode: str
) -> None:
    assert [service.get(f"/hang/{mode}").status_code for _ in range(3)] == [504, 504, 504]
    assert service.get("/breakers").json()[mode] == "OPEN"
    started = time.monotonic()
    assert service.get(f"/hang/{mode}").status_code == 503  # rejected at once, the dependency not called
    assert time.monotonic() - started < 0.1 + 0.5  # well under the dependency's timeout plus a round trip
    time.sleep(0.6)  # recovery_s: the next call is the HALF_OPEN trial, and it times out too
    assert service.get(f"/hang/{mode}").status_code == 504
    assert service.get("/breakers").json()[mode] == "OPEN"  # re-opened, not closed by the cancellation
    assert service.get(f"/hang/{mode}").status_code == 503


# --- 2. a hung readiness check holds one thread and never the application's executor -----------


def test_a_hung_check_holds_one_thread_and_the_application_keeps_its_executor(service: svc.Service) -> None:
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        probes = list(pool.map(lambda _: service.get("/readyz"), range(30)))
    for probe in probes:
        report = probe.json()["checks"]["stuck"]
        assert (report["status"], report["error"]) == ("down", "no answer within 0.3s")
        assert report["latency_ms"] < 300 + 500  # each probe waits the check's timeout, no longer
    assert service.get("/threads").json() == {"checks": 1}
    # asyncio's default executor is free for the application: its own thread work still answers
    assert all(service.get("/work").json() == {"answer": 42} for _ in range(40))
    started = time.monotonic()
    assert service.terminate(timeout_s=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    assert time.monotonic() - started < 5  # shutdown does not wait for the hung check's thread


# --- 3. a full disk, an unwritable log directory, a log file moved away ------------------------


def records(service: svc.Service) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]


def dropped(receiver: OtlpReceiver, signal_name: str, metric: str = "qm_otel.telemetry.dropped") -> float:
    """The latest cumulative ``qm_otel.telemetry.dropped`` for ``signal_name``, summed over reasons."""
    latest: dict[str, float] = {}
    for point in receiver.snapshot()[2]:
        if point.name == metric and point.attributes.get("signal") == signal_name:
            latest[str(point.attributes.get("reason"))] = point.value or 0.0
    return sum(latest.values())


def test_a_full_disk_suspends_the_log_file_reports_once_and_stdout_keeps_every_line(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    log_file = tmp_path / "app.log"
    log_file.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full filesystem
    with svc.start(APP, svc.base_env(receiver.endpoint, QM_OTEL_LOG_FILE=str(log_file))) as service:
        for _ in range(50):
            assert service.get("/log", params={"n": 5}).status_code == 200
        receiver.wait_for(lambda r: dropped(r, "log_file") >= 250)
        log_file.unlink()
        real = tmp_path / "disk-with-room.log"
        log_file.symlink_to(real)  # the disk has room again (the path now leads to a writable file)
        written = 0
        deadline = time.monotonic() + 20  # retries back off 1 s, 2 s, 4 s …: wait for the next one
        while not (real.exists() and real.read_text()) and time.monotonic() < deadline:
            assert service.get("/log", params={"n": 1}).status_code == 200
            written += 1
            time.sleep(0.25)
    assert "Traceback" not in service.errors()
    assert len(service.errors()) < 2_000  # no report per record (before: a traceback per record)
    lines = records(service)
    assert sum(str(r["message"]).startswith("line ") for r in lines) == 50 * 5 + written  # stdout unaffected
    errors = [r for r in lines if r["logger"] == "qm_otel.files" and r["level"] == "ERROR"]
    assert len(errors) == 1
    assert str(log_file) in str(errors[0]["message"])
    assert "ENOSPC" in str(errors[0]["message"])
    recovered = [r for r in lines if r["logger"] == "qm_otel.files" and r["level"] == "INFO"]
    assert len(recovered) == 1
    assert "writable again" in str(recovered[0]["message"])
    assert real.read_text().count('"line ') >= 1  # the lines after the recovery are in the file


def test_a_log_file_moved_away_by_logrotate_is_reopened(receiver: OtlpReceiver, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    with svc.start(APP, svc.base_env(receiver.endpoint, QM_OTEL_LOG_FILE=str(log_file))) as service:
        assert service.get("/log", params={"n": 2}).status_code == 200
        log_file.rename(tmp_path / "app.log.1")  # logrotate's default: move, then the program reopens
        time.sleep(1.1)  # the path is checked at most once a second
        assert service.get("/log", params={"n": 4}).status_code == 200
    assert (tmp_path / "app.log.1").read_text().count('"line ') == 2
    assert log_file.read_text().count('"line ') == 4


UNWRITABLE = "/etc/hostname/logs/app.log"  # under a regular file: ENOTDIR even for root


def test_an_unwritable_log_file_fails_setup_naming_the_setting(receiver: OtlpReceiver) -> None:
    result = subprocess.run([sys.executable, "-c", "import qm_otel; qm_otel.setup()"],
                            env=svc.base_env(receiver.endpoint, QM_OTEL_LOG_FILE=UNWRITABLE),
                            capture_output=True, text=True, timeout=60, check=False, cwd=svc.ROOT)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("qm_otel.core.config.ConfigError: qm-otel setting 'log_file' (QM_OTEL_LOG_FILE")
    assert repr(UNWRITABLE) in last
    assert "ENOTDIR" in last


def test_under_the_wrapper_an_unwritable_log_file_is_one_line_and_stdout_logging(receiver: OtlpReceiver) -> None:
    with svc.start(APP, svc.base_env(receiver.endpoint, QM_OTEL_LOG_FILE=UNWRITABLE), zero_code=True) as service:
        assert service.get("/log", params={"n": 2}).status_code == 200
    errors = [line for line in service.errors().splitlines() if line.strip()]
    assert errors == [errors[0]]
    assert errors[0].startswith("qm-otel: qm-otel setting 'log_file'")
    assert errors[0].endswith("logging to stdout only")
    assert sum(str(r["message"]).startswith("line ") for r in records(service)) == 2


# --- 4. and 5. a collector that is down, black-holed or overloaded ------------------------------


def server_spans(receiver: OtlpReceiver, path: str) -> int:
    return sum(1 for s in receiver.snapshot()[0] if s.kind == 2 and s.attributes.get("url.path") == path)


def app_lines(receiver: OtlpReceiver) -> int:
    return sum(1 for g in receiver.snapshot()[1] if str(g.body).startswith("line "))


def export_reports(service: svc.Service) -> list[tuple[str, str]]:
    return [(str(r["level"]), str(r["message"])) for r in records(service) if r["logger"] == "qm_otel.export"]


@pytest.mark.parametrize("outage", ["refused", "unavailable"])
def test_an_outage_that_fits_the_buffer_loses_nothing_and_is_reported_once(
    receiver: OtlpReceiver, outage: str
) -> None:
    with svc.start(APP, svc.base_env(receiver.endpoint)) as service:
        assert service.get("/log").status_code == 200
        receiver.wait_for(lambda r: app_lines(r) == 1)
        receiver.down() if outage == "refused" else receiver.set_mode("unavailable")
        for _ in range(200):
            assert service.get("/log", params={"n": 1}).status_code == 200
        time.sleep(2)  # at least one failed attempt per signal, and a retry or two
        receiver.up() if outage == "refused" else receiver.set_mode("ok")
        receiver.wait_for(lambda r: server_spans(r, "/log") == 201 and app_lines(r) == 201, timeout_s=60)
        # the export's reports are written, never exported (the export they report on may be failing)
        wait_for(lambda: {m.split(" export")[0] for level, m in export_reports(service)
                          if level == "INFO" and "recovered" in m} >= {"qm-otel: traces", "qm-otel: logs"},
                 timeout_s=30)
        # what the outage held back is counted as retried (the spans and both log records of 200 requests)
        receiver.wait_for(lambda r: dropped(r, "traces", "qm_otel.telemetry.retried") >= 200
                          and dropped(r, "logs", "qm_otel.telemetry.retried") >= 400, timeout_s=30)
    reports = export_reports(service)
    for signal_name in ("traces", "logs"):
        failing = [m for level, m in reports if level == "WARNING" and m.startswith(f"qm-otel: {signal_name} export")]
        recovered = [m for level, m in reports if level == "INFO" and m.startswith(f"qm-otel: {signal_name} export")]
        assert len(failing) == 1, reports
        assert len(recovered) == 1, reports
        assert "; 0 item(s) were dropped meanwhile" in recovered[0]
    assert "Transient error" not in service.output() + service.errors()  # not a line per retry


def test_beyond_the_buffer_items_are_dropped_and_counted(receiver: OtlpReceiver) -> None:
    with svc.start(APP, svc.base_env(receiver.endpoint, QM_OTEL_EXPORT_BUFFER_ITEMS="50")) as service:
        assert service.get("/log").status_code == 200
        receiver.wait_for(lambda r: app_lines(r) == 1)
        receiver.down()
        for _ in range(100):
            assert service.get("/log", params={"n": 1}).status_code == 200
        time.sleep(1)
        receiver.up()
        receiver.wait_for(lambda r: dropped(r, "traces") > 0 and dropped(r, "logs") > 0
                          and server_spans(r, "/log") > 1, timeout_s=60)
    assert 0 < server_spans(receiver, "/log") - 1 <= 50
    recovered = [m for level, m in export_reports(service) if level == "INFO" and "traces export" in m]
    assert recovered
    assert int(re.search(r"; (\d+) item\(s\) were dropped", recovered[0]).group(1)) > 0  # type: ignore[union-attr]


def stop_seconds(service: svc.Service) -> float:
    started = time.monotonic()
    service.terminate(timeout_s=60)
    return time.monotonic() - started


def test_shutdown_with_a_black_holed_collector_keeps_to_its_bound(receiver: OtlpReceiver) -> None:
    with svc.start(APP, svc.base_env(receiver.endpoint, QM_OTEL_SHUTDOWN_TIMEOUT="2")) as service:
        assert service.get("/log").status_code == 200
        receiver.set_mode("blackhole")
        for _ in range(20):
            assert service.get("/log").status_code == 200
        time.sleep(0.5)  # a batch is on its way into the black hole
        assert stop_seconds(service) < 2 + 1  # lifespan flush, SIGTERM handler and atexit share one budget


def test_shutdown_with_the_collector_refusing_connections_is_quick(receiver: OtlpReceiver) -> None:
    with svc.start(APP, svc.base_env(receiver.endpoint)) as service:
        assert service.get("/log").status_code == 200
        receiver.wait_for(lambda r: app_lines(r) == 1)
        receiver.down()
        for _ in range(20):
            assert service.get("/log").status_code == 200
        assert stop_seconds(service) < 1
    # said once per signal: on stderr (the pipeline's handlers are gone by then: the stdlib's last resort)
    assert "could not be sent" in service.errors(), service.errors()
