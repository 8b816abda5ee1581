"""Issue 16: the request log's user, query and code location, against real uvicorn and a real receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

DEPENDENCY = "tests.integration.apps.auth_dependency:app"
MIDDLEWARE = "tests.integration.apps.auth_middleware:app"
APP_FILE = svc.ROOT / "tests/integration/apps/auth_dependency.py"


def records(service: svc.Service) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]


def request_lines(service: svc.Service) -> dict[str, dict[str, object]]:
    return {str(r["url_path"]): r for r in records(service) if r.get("event") == "http_request"}


def served(receiver: OtlpReceiver, app: str, calls: list[tuple[str, dict[str, str]]], **env: str) -> svc.Service:
    with svc.start(app, svc.base_env(receiver.endpoint, **env)) as service:
        for path, headers in calls:
            service.get(path, headers=headers)
        receiver.wait_for(lambda r: sum(1 for s in r.snapshot()[0] if s.kind == 2) >= len(calls))
        receiver.wait_for(lambda r: sum(1 for g in r.snapshot()[1] if g.attributes.get("event") == "http_request")
                          >= len(calls))
    return service


def test_a_user_authenticated_in_a_dependency_is_on_the_span_and_the_request_log(receiver: OtlpReceiver) -> None:
    service = served(receiver, DEPENDENCY, [("/me", {"Authorization": "Bearer t-1"}),
                                            ("/me-sync", {"Authorization": "Bearer t-2"}),
                                            ("/public", {}), ("/me", {"Authorization": "Bearer nope"})])
    lines = request_lines(service)
    me = [r for r in records(service) if r.get("url_path") == "/me" and r.get("http_status_code") == 200]
    assert me[0]["user_id"] == "u-17"
    assert lines["/me-sync"]["user_id"] == "u-18"  # set in a worker thread, seen when the request ends
    assert "user_id" not in lines["/public"]
    unauthorised = [r for r in records(service) if r.get("url_path") == "/me" and r.get("http_status_code") == 401]
    assert "user_id" not in unauthorised[0]
    spans = {(s.attributes["url.path"], s.attributes.get("http.response.status_code")): s
             for s in receiver.snapshot()[0] if s.kind == 2}
    assert spans[("/me", 200)].attributes["user.id"] == "u-17"
    assert spans[("/me-sync", 200)].attributes["user.id"] == "u-18"
    assert "user.id" not in spans[("/public", 200)].attributes
    exported = [g for g in receiver.snapshot()[1] if g.attributes.get("event") == "http_request"]
    assert {g.attributes.get("user.id") for g in exported} == {"u-17", "u-18", None}
    everything = service.output() + service.errors() + repr(receiver.snapshot())
    assert "Ada" not in everything  # a name is recorded only when the app passes one
    assert "Turing" not in everything


def test_a_user_from_starlettes_authentication_middleware(receiver: OtlpReceiver) -> None:
    service = served(receiver, MIDDLEWARE, [("/me", {"Authorization": "Bearer t-9"})])
    assert request_lines(service)["/me"]["user_id"] == "u-99"
    [span] = [s for s in receiver.snapshot()[0] if s.kind == 2]
    assert span.attributes["user.id"] == "u-99"
    assert "Grace" not in service.output() + repr(receiver.snapshot())  # identity, never display_name


def test_the_query_is_logged_with_sensitive_values_replaced_and_capped(receiver: OtlpReceiver) -> None:
    long = "x" * 5000
    service = served(receiver, DEPENDENCY, [("/search?q=shoes&token=abc123&page=2&api_key=k", {}),
                                            (f"/search?q={long}", {})])
    lines = [r for r in records(service) if r.get("event") == "http_request"]
    assert lines[0]["query"] == "q=shoes&token=REDACTED&page=2&api_key=REDACTED"
    assert len(str(lines[1]["query"])) <= 1024
    assert "abc123" not in service.output()
    exported = [g for g in receiver.snapshot()[1] if g.attributes.get("event") == "http_request"]
    assert exported[0].attributes["url.query"] == "q=shoes&token=REDACTED&page=2&api_key=REDACTED"
    assert "abc123" not in repr(receiver.snapshot()[1])


def _line_of(marker: str, path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if marker in line)


@pytest.mark.parametrize("code_location", ["on", "off"])
def test_records_carry_their_code_location_unless_turned_off(receiver: OtlpReceiver, code_location: str) -> None:
    env = {} if code_location == "on" else {"QM_OTEL_LOG_CODE_LOCATION": "false"}
    service = served(receiver, DEPENDENCY, [("/where", {})], **env)
    [line] = [r for r in records(service) if r["message"] == "logged from a known place"]
    [exported] = [g for g in receiver.snapshot()[1] if g.body == "logged from a known place"]
    [request] = [r for r in records(service) if r.get("event") == "http_request"]
    if code_location == "off":
        assert not {"module", "function", "line"} & set(line)
        assert not any(key.startswith("code.") for key in exported.attributes)
        return
    expected_line = _line_of("LOG_HERE_LINE", APP_FILE)
    assert (line["module"], line["function"], line["line"]) == ("auth_dependency", "log_here", expected_line)
    assert exported.attributes["code.function.name"] == "log_here"
    assert exported.attributes["code.line.number"] == expected_line
    assert str(exported.attributes["code.file.path"]).endswith("tests/integration/apps/auth_dependency.py")
    assert "function" not in request  # the request log is qm-otel's own record: no caller to report
