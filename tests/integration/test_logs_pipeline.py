"""Sensitive values never reach logs or spans; one dictConfig file configures the app and uvicorn."""

from __future__ import annotations

import json

import pytest

from qm_otel.logs.pipeline import LOGGING_CONFIG
from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

SECRETS = ("abc123secret", "xyzsecret-bearer", "cookiesecret-99", "keysecret-123")


@pytest.mark.parametrize("launch", list(svc.CORRELATED))
def test_sensitive_headers_and_query_values_never_reach_logs_or_spans(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = svc.CORRELATED[launch]
    env = svc.base_env(receiver.endpoint,
                       OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST="authorization,cookie,x-request-id")
    with svc.start(app, env, zero_code=zero_code) as service:
        response = service.get("/log", params={"token": SECRETS[0], "user": "1"},
                               headers={"Authorization": f"Bearer {SECRETS[1]}", "Cookie": f"session={SECRETS[2]}"})
        assert response.status_code == 200
        assert service.get("/fetch", params={"url": f"{service.url}/healthz"}).status_code == 200
        receiver.wait_for(lambda r: sum(g.attributes.get("event") == "http_request" for g in r.snapshot()[1]) >= 2)
        receiver.wait_for(lambda r: any(s.kind == 3 for s in r.snapshot()[0]))
    spans, logs, points = receiver.snapshot()
    exported = repr(spans) + repr(logs) + repr(points)
    for secret in SECRETS:
        assert secret not in exported, secret
        assert secret not in service.output(), secret
    server = next(s for s in spans if s.name == "GET /log")
    assert server.attributes["url.query"] == "token=REDACTED&user=1"
    captured = {k: v for k, v in server.attributes.items() if k.startswith("http.request.header.")}
    assert captured["http.request.header.authorization"] == ["[REDACTED]"]
    assert captured["http.request.header.cookie"] == ["[REDACTED]"]
    client = next(s for s in spans if s.kind == 3)
    assert client.attributes["url.full"].endswith("/healthz?api_key=REDACTED&page=2")


@pytest.mark.parametrize("launch", list(svc.CORRELATED))
def test_one_dictconfig_file_for_the_app_and_uvicorn(receiver: OtlpReceiver, launch: str) -> None:
    app, zero_code = svc.CORRELATED[launch]
    env = svc.base_env(receiver.endpoint, QM_OTEL_LOG_CONFIG=str(LOGGING_CONFIG))
    del env["QM_OTEL_LOG_FORMAT"]
    extra = () if zero_code else ("--log-config", str(LOGGING_CONFIG))  # the wrapper sets it by itself
    with svc.start(app, env, zero_code=zero_code, extra_args=extra) as service:
        assert service.get("/log", headers={"X-Correlation-ID": "cfg-1"}).status_code == 200
        receiver.wait_for(lambda r: any(g.attributes.get("event") == "http_request" for g in r.snapshot()[1]))
    lines = [line for line in service.lines if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every stdout line is the file's JSON format
    handler = [p for p in parsed if p["message"] == "in handler"]
    assert len(handler) == 1  # no duplicate handler, although dictConfig ran twice
    assert handler[0]["correlation_id"] == "cfg-1"
    assert [p for p in parsed if p["logger"] == "uvicorn.access"] == []
    assert any(p["logger"] == "uvicorn.error" and "Application startup complete" in p["message"] for p in parsed)
    _, logs, _ = receiver.snapshot()
    assert sum(g.body == "in handler" for g in logs) == 1
