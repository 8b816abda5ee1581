"""Issue 13, a newcomer's first hour: clear errors, honest routes, clean logs (real uvicorn, real receiver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

PLAIN = "tests.integration.apps.plain:app"
PREFIXED = "tests.integration.apps.prefixed:app"
OLDEST_FASTAPI = ("fastapi==0.110.0", "starlette==0.36.3")  # the oldest the package allows (fastapi>=0.110)


def records(service: svc.Service) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]


# --- 1. a bad setting under the wrapper: one line, and a visible decision ----------------------


def test_a_bad_setting_under_the_wrapper_is_one_line_and_the_service_runs_without_telemetry(
    receiver: OtlpReceiver,
) -> None:
    env = svc.base_env(receiver.endpoint, QM_OTEL_SHUTDOWN_TIMEOUT="-1")
    with svc.start(PLAIN, env, zero_code=True) as service:
        assert service.get("/work/1").status_code == 200
    lines = [line for line in service.errors().splitlines() if line.strip()]
    assert "Traceback" not in service.errors()
    qm_lines = [line for line in lines if line.startswith("qm-otel:")]
    assert len(qm_lines) == 1
    assert "'shutdown_timeout_s' (from QM_OTEL_SHUTDOWN_TIMEOUT) got '-1'; allowed: a positive number" in qm_lines[0]
    assert qm_lines[0].endswith("telemetry is off for this process (QM_OTEL_ON_CONFIG_ERROR=exit stops it instead)")
    assert receiver.snapshot() == ([], [], [])


def test_a_bad_setting_under_the_wrapper_can_stop_the_service_instead(receiver: OtlpReceiver) -> None:
    env = svc.base_env(receiver.endpoint, QM_OTEL_SHUTDOWN_TIMEOUT="-1", QM_OTEL_ON_CONFIG_ERROR="exit")
    command = [str(svc.BIN / "opentelemetry-instrument"), str(svc.BIN / "uvicorn"), PLAIN, "--port", "0"]
    result = subprocess.run(command, env=env, cwd=svc.ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "qm-otel: qm-otel setting 'shutdown_timeout_s' (from QM_OTEL_SHUTDOWN_TIMEOUT) got '-1'; allowed: a "
        "positive number of seconds; stopping (QM_OTEL_ON_CONFIG_ERROR=exit)"]


# --- 2., 3. and 5. routes under a prefix, unmatched requests, crashes --------------------------


@pytest.fixture(scope="session")
def oldest_fastapi(tmp_path_factory: pytest.TempPathFactory) -> str:
    return svc.packages_dir(tmp_path_factory.mktemp("oldest-fastapi"), *OLDEST_FASTAPI)


@pytest.mark.parametrize("fastapi_version", ["newest", "oldest"])
def test_routes_under_a_router_prefix_keep_the_prefix_everywhere(
    receiver: OtlpReceiver, fastapi_version: str, request: pytest.FixtureRequest
) -> None:
    env = svc.base_env(receiver.endpoint)
    if fastapi_version == "oldest":
        env["PYTHONPATH"] = f"{request.getfixturevalue('oldest_fastapi')}{os.pathsep}{svc.ROOT}"
    with svc.start(PREFIXED, env) as service:
        assert service.get("/api/v1/items/7").status_code == 200
        assert service.get("/wp-login.php").status_code == 404
        assert service.get("/api/v1/items/7/crash").status_code == 500
        receiver.wait_for(lambda r: len([s for s in r.snapshot()[0] if s.kind == 2]) == 3)
    template = "/api/v1/items/{item_id}"
    by_path = {s.attributes["url.path"]: s for s in receiver.snapshot()[0] if s.kind == 2}
    assert by_path["/api/v1/items/7"].name == f"GET {template}"
    assert by_path["/api/v1/items/7"].attributes["http.route"] == template
    assert "http.route" not in by_path["/wp-login.php"].attributes
    request_log = {r["url_path"]: r for r in records(service) if r.get("event") == "http_request"}
    matched, unmatched = request_log["/api/v1/items/7"], request_log["/wp-login.php"]
    assert (matched["http_route"], matched["action"]) == (template, f"GET {template}")
    # unmatched: no raw path in a field that is grouped or labelled; the path stays in url_path
    assert "http_route" not in unmatched
    assert unmatched["action"] == "GET unmatched"
    exported = [g for g in receiver.snapshot()[1] if g.attributes.get("event") == "http_request"]
    otlp = {str(g.attributes["url_path"]): g for g in exported}
    assert "http_route" not in otlp["/wp-login.php"].attributes
    assert otlp["/api/v1/items/7"].attributes["http_route"] == template
    # 5. the crash report written by uvicorn after the request carries the request's IDs; level and status agree
    crash = by_path["/api/v1/items/7/crash"]
    [report] = [r for r in records(service) if str(r["message"]).startswith("Exception in ASGI application")]
    assert (report["trace_id"], report["span_id"]) == (crash.trace_id, crash.span_id)
    assert report["correlation_id"] == crash.attributes["correlation.id"]
    assert (report["level"], report["status"]) == ("ERROR", "FAILURE")
    [exported] = [g for g in receiver.snapshot()[1] if str(g.body).startswith("Exception in ASGI application")]
    assert (exported.trace_id, exported.span_id) == (crash.trace_id, crash.span_id)
    # 6. uvicorn's colour copy of its message is in no output
    assert all("color_message" not in g.attributes for g in receiver.snapshot()[1])
    assert "color_message" not in service.output()


# --- 4. logging configured before qm-otel ------------------------------------------------------


def test_console_handlers_set_up_before_setup_are_replaced_and_named_once(receiver: OtlpReceiver) -> None:
    with svc.start("tests.integration.apps.basic_config:app", svc.base_env(receiver.endpoint)) as service:
        assert service.get("/hello").status_code == 200
    everything = service.output() + service.errors()
    assert everything.count("hello once") == 1
    notes = [r for r in records(service) if "replaced the root logger's console handler" in str(r["message"])]
    assert len(notes) == 1
    assert "StreamHandler(<stderr>)" in str(notes[0]["message"])
    assert "StreamHandler(<stdout>)" in str(notes[0]["message"])


def test_handlers_writing_elsewhere_are_kept(tmp_path: Path) -> None:
    script = f"""
import logging
logging.basicConfig(filename={str(tmp_path / 'app.log')!r}, level=logging.INFO)
import qm_otel
qm_otel.setup(traces_exporter="none", metrics_exporter="none", logs_exporter="none")
logging.getLogger("app").info("kept in the file")
"""
    result = subprocess.run([sys.executable, "-c", script], env=svc.base_env("http://127.0.0.1:9"),
                            capture_output=True, text=True, timeout=60, check=False, cwd=svc.ROOT)
    assert result.returncode == 0, result.stderr
    assert "kept in the file" in (tmp_path / "app.log").read_text()
    assert result.stdout.count("kept in the file") == 1
    assert "replaced the root logger" not in result.stdout


# --- 11. WebSockets: the header on the handshake, a request-log line per connection ------------


def test_a_websocket_connection_echoes_the_correlation_id_and_gets_a_request_log_line(
    receiver: OtlpReceiver,
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with svc.start("tests.integration.apps.websocket_app:app", svc.base_env(receiver.endpoint)) as service:
        ws_url = service.url.replace("http://", "ws://")
        with connect(f"{ws_url}/ws/lobby", additional_headers={"X-Correlation-ID": "chat-42"}) as websocket:
            assert websocket.response.headers["X-Correlation-ID"] == "chat-42"
            websocket.send("hello")
            assert websocket.recv(timeout=10) == "hello"
            websocket.send("bye")
            with pytest.raises(ConnectionClosed):
                websocket.recv(timeout=10)
        with connect(f"{ws_url}/broken") as websocket, pytest.raises(ConnectionClosed):
            websocket.recv(timeout=10)
    lines = {r["url_path"]: r for r in records(service) if r.get("event") == "websocket_connection"}
    lobby, broken = lines["/ws/lobby"], lines["/broken"]
    assert (lobby["action"], lobby["http_route"]) == ("WS /ws/{room}", "/ws/{room}")
    assert lobby["websocket_close_code"] == 1000
    assert (lobby["correlation_id"], lobby["level"], lobby["status"]) == ("chat-42", "INFO", "SUCCESS")
    assert float(str(lobby["duration_ms"])) > 0
    assert (broken["websocket_close_code"], broken["level"], broken["status"]) == (1011, "ERROR", "FAILURE")
    echo = [r for r in records(service) if r["message"] == "echo in lobby"]
    assert echo[0]["correlation_id"] == "chat-42"
