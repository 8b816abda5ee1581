"""The delivery buffer, driven by a scripted HTTP client: limits, outcomes, flush while failing, refusals."""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SpanExportResult

from qm_otel.logs.formatters import JsonFormatter
from qm_otel.logs.handler import EXPORT_LOGGER, TelemetryHandler
from qm_otel.signals import drops
from qm_otel.signals.delivery import ExporterTarget, SpanDelivery, _retry_after, deliverable
from qm_otel.signals.drops import Refusals, refusal_hint
from tests.support.polling import wait_for


@dataclass
class Result:
    status_code: int | None
    reason: str | None = None
    error: Exception | None = None
    retry_after: str | None = None

    def headers(self) -> dict[str, str]:
        return {"retry-after": self.retry_after} if self.retry_after else {}


@dataclass
class Client:
    """Answers each POST with the next scripted result (the last one repeats)."""

    answers: list[Result]
    sent: list[bytes] = field(default_factory=list)
    _timeout: float = 1.0
    _endpoint: str = "http://collector/v1/traces"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _compress(self, data: bytes) -> bytes:
        return data

    def _submit(self, data: bytes, timeout: float) -> Result:
        del timeout
        with self.lock:
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            if answer.status_code == 200:
                self.sent.append(data)
            return answer


class Inner:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._max_request_size = 0
        self.closed = False

    def shutdown(self) -> None:
        self.closed = True


def delivery(answers: list[Result], clock: Any = time.monotonic, **limits: Any) -> tuple[SpanDelivery, Client]:
    client = Client(answers)
    encode = lambda batch: (b"".join(batch), len(batch))  # noqa: E731 - a batch of byte strings
    limits = {"max_items": 100, "max_bytes": 10_000, **limits}
    target = ExporterTarget(lambda: Inner(client), client._endpoint, 0)
    return SpanDelivery(target, "traces", encode, clock=clock, **limits), client


def test_only_exporters_with_a_known_client_are_delivered() -> None:
    assert deliverable(Inner(Client([Result(200)])))
    assert not deliverable(object())


def test_batches_are_sent_in_order() -> None:
    sender, client = delivery([Result(200)])
    for n in range(5):
        assert sender.export([f"{n}".encode()]) == SpanExportResult.SUCCESS
    assert sender.flush(5)
    assert client.sent == [b"0", b"1", b"2", b"3", b"4"]
    sender.shutdown()


def test_the_buffer_is_bounded_in_items_and_in_bytes() -> None:
    sender, _ = delivery([Result(None, error=ConnectionRefusedError())], max_items=3, max_bytes=10)
    results = [sender.export([b"abcd"]) for _ in range(5)]  # 4 bytes each: the third is over 10 bytes
    assert results.count(SpanExportResult.FAILURE) >= 3
    assert sender.pending() <= 2
    sender.shutdown(timeout_millis=100)


def test_a_refused_batch_is_dropped_and_the_next_one_sent() -> None:
    sender, client = delivery([Result(400, "bad"), Result(200)])
    sender.export([b"bad"])
    sender.export([b"good"])
    assert sender.flush(5)
    assert client.sent == [b"good"]
    sender.shutdown()


def test_flush_while_failing_tries_once_now_and_does_not_wait_out_the_backoff() -> None:
    sender, client = delivery([Result(503), Result(503), Result(200)])
    sender.export([b"x"])
    assert not sender.flush(5)  # the first send failed; the one made at once failed too
    assert sender.failing
    assert sender.flush(5)  # the next attempt, made at once, succeeds
    assert client.sent == [b"x"]
    sender.shutdown()


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert _retry_after(Result(429, retry_after="3")) == 3.0
    assert _retry_after(Result(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past
    assert _retry_after(Result(429, retry_after="soon")) is None
    assert _retry_after(Result(429)) is None


def test_a_count_made_after_shutdown_prints_no_sdk_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Items that could not be sent are counted after shutdown(): not through the closed provider."""
    import qm_otel
    from qm_otel.core import instruments
    from qm_otel.testing import Capture, reset

    qm_otel.setup(traces_exporter="none", metrics_exporter="none", logs_exporter="none", **Capture().setup_kwargs())
    reset()
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        instruments.current().telemetry_dropped.add(3, {"signal": "logs", "reason": "shutdown"})
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


# --- the SDK exporter is made on the first send ------------------------------------------------------


class Recipe:
    """Counts the exporters it makes; the first ``failures`` attempts raise."""

    def __init__(self, client: Client, failures: int = 0) -> None:
        self.client = client
        self.failures = failures
        self.made: list[Inner] = []

    def __call__(self) -> Inner:
        if self.failures:
            self.failures -= 1
            message = "no transport"
            raise ImportError(message)
        self.made.append(Inner(self.client))
        return self.made[-1]


def lazy(recipe: Recipe, max_request_size: int = 0) -> SpanDelivery:
    encode = lambda batch: (b"".join(batch), len(batch))  # noqa: E731 - a batch of byte strings
    target = ExporterTarget(recipe, "http://collector/v1/traces", max_request_size)
    return SpanDelivery(target, "traces", encode, max_items=100, max_bytes=10_000)


def test_the_sender_starts_and_the_exporter_is_made_with_the_first_payload_and_once() -> None:
    recipe = Recipe(Client([Result(200)]))
    sender = lazy(recipe)
    assert sender.flush(1)  # nothing buffered: nothing to start or make
    assert sender._thread is None
    assert recipe.made == []
    for n in range(3):
        sender.export([f"{n}".encode()])
    assert sender.flush(5)
    assert len(recipe.made) == 1
    assert recipe.client.sent == [b"0", b"1", b"2"]
    sender.shutdown()
    assert recipe.made[0].closed


def test_shutdown_with_nothing_sent_makes_no_exporter() -> None:
    recipe = Recipe(Client([Result(200)]))
    sender = lazy(recipe)
    sender.shutdown()
    assert recipe.made == []
    assert sender._thread is None
    assert sender.export([b"late"]) == SpanExportResult.FAILURE  # closed
    assert recipe.made == []


def test_an_exporter_that_cannot_be_made_is_a_failing_send_retried_with_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    recipe = Recipe(Client([Result(200)]), failures=1)
    sender = lazy(recipe)
    with caplog.at_level(logging.INFO, logger="qm_otel.export"):
        sender.export([b"kept"])
        assert sender.flush(5)  # the first attempt failed; the one the flush makes at once succeeds
        wait_for(lambda: any("recovered" in r.getMessage() for r in caplog.records), timeout_s=5)
    assert recipe.client.sent == [b"kept"]
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not be made (ImportError: no transport)" in m for m in messages), messages
    sender.shutdown()


def test_an_exporter_without_a_known_client_is_not_driven() -> None:
    class Opaque:
        closed = False

        def shutdown(self) -> None:
            self.closed = True

    made: list[Opaque] = []

    def make() -> Opaque:
        made.append(Opaque())
        return made[-1]

    target = ExporterTarget(make, "http://collector/v1/traces", 0)
    sender = SpanDelivery(target, "traces", lambda batch: (b"".join(batch), len(batch)), max_items=10,
                          max_bytes=100)
    sender.export([b"x"])
    assert not sender.flush(2)
    assert sender.failing
    assert made
    assert all(m.closed for m in made)  # each one made was shut down again
    assert sender.sdk_client is None
    sender.shutdown(timeout_millis=100)


def test_the_request_limit_applies_before_the_exporter_is_made_and_follows_it_after() -> None:
    recipe = Recipe(Client([Result(200)]))
    sender = lazy(recipe, max_request_size=4)
    assert sender.export([b"12345"]) == SpanExportResult.FAILURE  # over the target's limit, before any send
    assert sender.export([b"1234"]) == SpanExportResult.SUCCESS
    assert sender.flush(5)
    assert recipe.made[0]._max_request_size == 0  # the exporter made says: no limit
    assert sender.export([b"123456"]) == SpanExportResult.SUCCESS
    assert sender.flush(5)
    assert recipe.client.sent == [b"1234", b"123456"]
    sender.shutdown()


def test_a_forked_child_makes_its_own_exporter() -> None:
    recipe = Recipe(Client([Result(200)]))
    sender = lazy(recipe)
    sender.export([b"parent"])
    assert sender.flush(5)
    sender._pid = -1  # as in a child forked from this process: the parent's buffer, sender and exporter stay behind
    sender.export([b"child"])
    assert sender.flush(5)
    assert len(recipe.made) == 2
    assert not recipe.made[0].closed  # the parent's: not the child's to close
    assert recipe.client.sent == [b"parent", b"child"]
    sender.shutdown()
    assert recipe.made[1].closed


def test_a_child_forked_while_the_parent_makes_its_exporter_starts_over_without_waiting() -> None:
    """The child neither waits for the parent's payloads nor for a lock the parent's sender held at the fork."""
    started, release = threading.Event(), threading.Event()
    client = Client([Result(200)])

    def slow() -> Inner:  # the parent's sender is making its exporter when the fork happens
        started.set()
        release.wait(10)
        return Inner(client)

    sender = SpanDelivery(ExporterTarget(slow, "http://collector/v1/traces", 0), "traces",
                          lambda batch: (b"".join(batch), len(batch)), max_items=100, max_bytes=10_000)
    sender.export([b"parent"])
    assert started.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: every exit path is os._exit, never back into pytest
        code = 1
        try:
            began = time.monotonic()
            empty = sender.pending() == 0 and sender.flush(5)
            sender.shutdown(timeout_millis=5000)
            code = 0 if empty and time.monotonic() - began < 2 else 2
        finally:
            os._exit(code)
    release.set()
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert sender.flush(5)
    assert client.sent == [b"parent"]  # sent once, by the parent
    sender.shutdown()


# --- a collector that refuses every batch (issue 22, item 5) ---------------------------------------


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reports(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == EXPORT_LOGGER]


def test_a_collector_refusing_every_batch_is_reported_once_then_summarised_then_its_recovery(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    sender, client = delivery([Result(404, "Not Found")] * 16 + [Result(200)], clock=clock)
    with caplog.at_level(logging.INFO, logger=EXPORT_LOGGER):
        for n in range(10):
            sender.export([f"{n}".encode()])
        assert sender.flush(5)  # refused batches are dropped: nothing is left to wait for
        wait_for(lambda: reports(caplog), timeout_s=5)  # the sender writes its line once the buffer is empty
        clock.now += 61  # the next refusal, a minute after the ERROR, is summarised
        sender.export([b"10"])
        assert sender.flush(5)
        wait_for(lambda: len(reports(caplog)) == 2, timeout_s=5)
        for n in range(11, 16):
            sender.export([f"{n}".encode()])
        assert sender.flush(5)
        clock.now += 2.5
        sender.export([b"accepted"])
        sender.export([b"and the next"])
        assert sender.flush(5)
        wait_for(lambda: len(reports(caplog)) == 3, timeout_s=5)
        time.sleep(0.1)  # nothing more comes
    sender.shutdown()
    assert client.sent == [b"accepted", b"and the next"]
    (error, error_message), (warning, summary), (info, recovery) = reports(caplog)  # nothing left at shutdown
    endpoint = "http://collector/v1/traces"
    assert (error, warning, info) == ("ERROR", "WARNING", "INFO")
    assert error_message.startswith(f"qm-otel: the collector at {endpoint} refused a traces batch (HTTP 404 Not "
                                    "Found); 1 item(s) dropped. Nothing answers OTLP there: check the host and port")
    assert error_message.endswith("Until it accepts one, further refusals are summarised every 60 s")
    assert summary == (f"qm-otel: the collector at {endpoint} refused 10 traces batch(es) in the last 61 s "
                       "(HTTP 404 Not Found); 10 item(s) dropped")
    assert recovery == (f"qm-otel: the collector at {endpoint} accepts traces batches again, after 63.5 s of "
                        "refusals (HTTP 404 Not Found); 5 item(s) dropped since the last report")
    assert not sender.failing  # a refusal is an answer, not an outage


def test_a_collector_that_refuses_some_batches_gets_at_most_a_summary_and_a_recovery_a_period(
        caplog: pytest.LogCaptureFixture) -> None:
    refusals = Refusals("logs", "http://collector/v1/logs")
    with caplog.at_level(logging.INFO, logger=EXPORT_LOGGER):
        for second in range(600):  # ten minutes: each second a large batch refused, a small one accepted
            refusals.refused(float(second), 413, "HTTP 413 Request Entity Too Large", 100, 6_000_000)
            refusals.accepted(second + 0.5)
    lines = reports(caplog)
    assert [level for level, _ in lines[:2]] == ["ERROR", "INFO"]
    assert "(6000000 bytes before compression)" in lines[0][1]
    assert "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE" in lines[0][1]
    assert [level for level, _ in lines[2:]] == ["WARNING", "INFO"] * 9  # one pair a minute, not an ERROR a minute
    assert lines[2][1].endswith("refused 60 logs batch(es) in the last 60 s (HTTP 413 Request Entity Too Large); "
                                "6000 item(s) dropped")


def test_refusals_that_come_back_after_a_quiet_spell_or_with_another_status_are_reported_in_full(
        caplog: pytest.LogCaptureFixture) -> None:
    refusals = Refusals("metrics", "http://collector/v1/metrics")
    with caplog.at_level(logging.INFO, logger=EXPORT_LOGGER):
        refusals.refused(0.0, 404, "HTTP 404 Not Found", 3, 100)
        refusals.refused(1.0, 401, "HTTP 401 Unauthorized", 3, 100)  # another fault, another fix: in full
        refusals.refused(2.0, 401, "HTTP 401 Unauthorized", 3, 100)
        refusals.accepted(3.0)
        refusals.refused(3.0 + drops.REFUSED_SUMMARY_S, 401, "HTTP 401 Unauthorized", 3, 100)  # back after a while
        refusals.refused(4.0 + drops.REFUSED_SUMMARY_S, 401, "HTTP 401 Unauthorized", 3, 100)
    assert [(level, message.split(";")[0].split(" (")[-1]) for level, message in reports(caplog)] == [
        ("ERROR", "HTTP 404 Not Found)"), ("ERROR", "HTTP 401 Unauthorized)"), ("INFO", "HTTP 401 Unauthorized)"),
        ("ERROR", "HTTP 401 Unauthorized)")]


def test_an_outage_that_ends_in_refusals_is_not_called_a_recovery(caplog: pytest.LogCaptureFixture) -> None:
    sender, _ = delivery([Result(503), Result(404, "Not Found")])
    with caplog.at_level(logging.INFO, logger=EXPORT_LOGGER):
        sender.export([b"x"])
        assert sender.flush(5)  # the first send failed (503); the one the flush made at once was refused: dropped
        wait_for(lambda: len(reports(caplog)) == 3, timeout_s=5)
    sender.shutdown()
    levels = reports(caplog)
    assert [level for level, _ in levels] == ["WARNING", "WARNING", "ERROR"]
    assert "is failing (HTTP 503)" in levels[0][1]
    assert "the collector answers again after" in levels[1][1]
    assert "refuses what it is sent; 0 item(s) were dropped meanwhile" in levels[1][1]
    assert "recovered" not in " ".join(message for _, message in levels)


@pytest.mark.parametrize(("status", "signal_name", "endpoint", "environment", "expected"), [
    (404, "logs", "http://collector:4318/otlp", {},
     "a per-signal endpoint (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) is used as it is and must end in /v1/logs "
     "(e.g. http://collector:4318/otlp/v1/logs)"),
    (404, "logs", "http://collector:4318/v1/traces/v1/logs", {},
     "the general endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or exporter_endpoint) gets /v1/logs appended, so it must "
     "not end in /v1/traces itself"),
    (405, "traces", "http://gateway/v1/traces", {},
     "any path prefix a gateway in front of the collector expects (OTEL_EXPORTER_OTLP_ENDPOINT="
     "http://host:port/prefix sends to http://host:port/prefix/v1/traces)"),
    (401, "logs", "http://c/v1/logs", {},
     "The collector asks for credentials and no header is configured: set the one it expects, e.g. "
     "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token> (or OTEL_EXPORTER_OTLP_LOGS_HEADERS for logs only)"),
    (403, "traces", "http://c/v1/traces", {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20secret,X-Org=7"},
     "The collector refuses the credentials sent: check the headers set by OTEL_EXPORTER_OTLP_HEADERS "
     "(authorization, x-org), their names and values"),
    (401, "metrics", "http://c/v1/metrics", {"OTEL_EXPORTER_OTLP_HEADERS": "a=b",
                                             "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "api-key=secret"},
     "the headers set by OTEL_EXPORTER_OTLP_METRICS_HEADERS (api-key)"),
    (413, "traces", "http://c/v1/traces", {}, "The request (2048 bytes before compression) is larger than the "
     "collector accepts: send smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)"),
    (413, "metrics", "http://c/v1/metrics", {}, "export fewer series at a time"),
    (400, "logs", "http://c/v1/logs", {}, "a 4xx other than 408 and 429 is not retried"),
])
def test_the_hint_names_the_likely_fix(monkeypatch: pytest.MonkeyPatch, status: int, signal_name: str,
                                       endpoint: str, environment: dict[str, str], expected: str) -> None:
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_HEADERS"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    hint = refusal_hint(status, signal_name, endpoint, 2048)
    assert expected in hint
    assert "secret" not in hint  # header names, never their values


def test_the_export_reports_of_a_failure_are_written_but_never_exported() -> None:
    """A refused logs batch's ERROR exported to the same collector was refused in turn, forever."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    stream = io.StringIO()
    handler = TelemetryHandler(JsonFormatter("svc"), provider, stream)
    logger = logging.getLogger(EXPORT_LOGGER)
    logger.addHandler(handler)
    logger.propagate = False
    level = logger.level
    logger.setLevel(logging.INFO)  # not the root's: shutdown() puts back the level a setup() in an earlier test set
    try:
        logger.error("qm-otel: the collector at x refused a logs batch")
        logger.warning("qm-otel: the collector at x refused 3 logs batch(es) in the last 60 s")
        logger.info("qm-otel: the collector at x accepts logs batches again")
        logging.getLogger("qm_otel.exports").error("another logger's error")  # a name that only starts alike
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(level)
    assert len(stream.getvalue().splitlines()) == 3  # every line written (the last logger has no handler here)
    assert [r.log_record.body for r in exporter.get_finished_logs()] == [
        "qm-otel: the collector at x accepts logs batches again"]


def test_refusals_not_yet_reported_are_reported_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    sender, _ = delivery([Result(401, "Unauthorized")])
    with caplog.at_level(logging.INFO, logger=EXPORT_LOGGER):
        for n in range(4):
            sender.export([f"{n}".encode(), b"more"])
        assert sender.flush(5)
        wait_for(lambda: reports(caplog), timeout_s=5)
        time.sleep(0.1)  # the sender writes nothing more: the other three are counted
        sender.shutdown()
    assert [level for level, _ in reports(caplog)] == ["ERROR", "WARNING"]
    assert reports(caplog)[1][1] == ("qm-otel: the collector at http://collector/v1/traces refused 3 traces batch(es) "
                                     "since the last report (HTTP 401 Unauthorized); 6 item(s) dropped")
