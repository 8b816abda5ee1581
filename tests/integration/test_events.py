"""The event API's span + log record + metric triple, start-up checkpoints, and Loki-facing attributes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qm_otel.core.conventions import classify
from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging
    import qm_otel
    from qm_otel.runtime.events import EventError, event, timed

    qm_otel.setup(log_format="json")

    event("FAMILY", "close_month", duration_ms=42.0, month="2025-09", message="month closed")
    with timed("CACHE", "warm", cache="users"):
        pass
    try:
        with timed("API", "charge"):
            raise ValueError("card declined")
    except ValueError:
        pass

    @timed("TEMPLATE", "render")
    async def render() -> None:
        raise TimeoutError("too slow")

    try:
        asyncio.run(render())
    except TimeoutError:
        pass

    @timed("PERF", "sum")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    with qm_otel.correlation("job-7"):
        event("SYSTEM", "checkpoint", "INFO", message="inside a job")
    try:
        event("NOPE", "x")
    except EventError as exc:
        print("EVENT_ERROR", exc)
    qm_otel.shutdown()
    """
)


@pytest.fixture
def run_script(receiver: OtlpReceiver) -> subprocess.CompletedProcess[str]:
    env = svc.base_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000", QM_OTEL_ENVIRONMENT="development")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_event_writes_one_record_at_the_level_its_status_implies(
    run_script: subprocess.CompletedProcess[str], receiver: OtlpReceiver
) -> None:
    logs = {g.body: g for g in receiver.snapshot()[1]}
    closed = logs["month closed"]
    assert closed.severity_text == "INFO"
    assert closed.attributes["component"] == "FAMILY"
    assert closed.attributes["action"] == "close_month"
    assert closed.attributes["status"] == "SUCCESS"
    assert closed.attributes["event"] == "family_close_month"
    assert closed.attributes["duration_ms"] == 42.0
    assert closed.attributes["month"] == "2025-09"
    job = logs["inside a job"]
    assert job.attributes["correlation_id"] == "job-7"
    assert "EVENT_ERROR unknown component 'NOPE'" in run_script.stdout


def test_timed_gives_span_record_and_histogram(
    run_script: subprocess.CompletedProcess[str], receiver: OtlpReceiver
) -> None:
    del run_script
    spans, logs, points = receiver.snapshot()
    by_name = {s.name: s for s in spans}
    records = {g.attributes.get("action"): g for g in logs if g.attributes.get("component")}
    expected = {"warm": ("CACHE", "SUCCESS", "INFO"), "charge": ("API", "FAILURE", "ERROR"),
                "render": ("TEMPLATE", "TIMEOUT", "ERROR"), "sum": ("PERF", "SUCCESS", "INFO")}
    for action, (component, status, level) in expected.items():
        span = by_name[f"{component} {action}"]
        record = records[action]
        assert record.attributes["status"] == status
        assert record.severity_text == level
        assert record.trace_id == span.trace_id  # the record is written inside the span
        assert record.span_id == span.span_id
        assert isinstance(record.attributes["duration_ms"], float)
        assert span.attributes["qm_otel.status"] == status
    assert records["warm"].attributes["cache"] == "users"
    assert records["charge"].attributes["exception.type"] == "ValueError"
    assert records["charge"].attributes["exception.message"] == "card declined"
    durations = [p for p in points if p.name == "qm_otel.timed.duration"]
    assert {(p.attributes["component"], p.attributes["action"], p.attributes["status"]) for p in durations} == {
        ("CACHE", "warm", "SUCCESS"), ("API", "charge", "FAILURE"), ("TEMPLATE", "render", "TIMEOUT"),
        ("PERF", "sum", "SUCCESS")}
    assert {p.unit for p in durations} == {"s"}


def test_setup_logs_the_bootstrap_checkpoints_and_classifies_start_up(
    run_script: subprocess.CompletedProcess[str], receiver: OtlpReceiver
) -> None:
    _, logs, points = receiver.snapshot()
    boot = [g for g in logs if g.attributes.get("component") == "BOOTSTRAP"]
    assert [g.attributes["action"] for g in boot] == ["START", "CORE", "PARALLEL", "VALIDATE", "COMPLETE"]
    complete = boot[-1]
    match = re.fullmatch(r"Ready in (\d+)ms", str(complete.body))
    assert match
    verdict = classify("bootstrap", complete.attributes["duration_ms"])
    assert complete.attributes["band"] == verdict.band
    assert complete.attributes["status"] == verdict.status
    assert complete.severity_text == {"WARNING": "WARN"}.get(verdict.level, verdict.level)
    startup = [p for p in points if p.name == "qm_otel.startup.duration"]
    assert len(startup) == 1
    assert startup[0].attributes == {"band": verdict.band}
    # stdout JSON has the same checkpoints
    stdout = [line for line in run_script.stdout.splitlines() if '"component":"BOOTSTRAP"' in line]
    assert len(stdout) == 5


def test_unknown_components_are_counted_not_raised_in_production(receiver: OtlpReceiver) -> None:
    script = textwrap.dedent(
        """
        import qm_otel
        from qm_otel.runtime.events import event
        qm_otel.setup(log_format="none", extra_components="BILLING")
        event("BILLING", "invoice")            # the application's own component: fine
        event("NOPE", "x", status="WEIRD")     # unknown component and status: written and counted
        qm_otel.shutdown()
        """
    )
    env = svc.base_env(receiver.endpoint, QM_OTEL_ENVIRONMENT="production")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    _, logs, points = receiver.snapshot()
    assert {g.attributes.get("component") for g in logs} >= {"BILLING", "NOPE"}
    invalid = {p.attributes["kind"]: p.value for p in points if p.name == "qm_otel.events.invalid"}
    assert invalid == {"component": 1, "status": 1}


LOGS_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "logs.md"


def loki_name(attribute: str) -> str:
    """How Loki's OTLP ingestion names an attribute in structured metadata (otlptranslator.NormalizeLabel)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


def test_every_field_the_documented_logql_queries_use_exists_on_the_records(receiver: OtlpReceiver) -> None:
    queries = re.findall(r"^(\{service_name=.*)$", LOGS_GUIDE.read_text(), flags=re.MULTILINE)
    assert len(queries) >= 3
    with svc.start("tests.integration.apps.correlated_setup:app", svc.base_env(receiver.endpoint)) as service:
        service.get("/log", headers={"X-Correlation-ID": "order-1001"})
        service.get("/boom")
        receiver.wait_for(lambda r: any(g.attributes.get("event") == "http_request" for g in r.snapshot()[1]))
    _, logs, _ = receiver.snapshot()
    available = {"service_name", "severity_text", "trace_id", "span_id"}  # stream label, fixed metadata
    for record in logs:
        available |= {loki_name(key) for key in record.attributes}
    for query in queries:
        stream, _, pipeline = query.partition("}")
        used = set(re.findall(r"(\w+)=", stream)) | set(re.findall(r"\|\s*(\w+)\s*(?:=|!=|>|<|=~)", pipeline))
        assert used <= available, (query, used - available)
