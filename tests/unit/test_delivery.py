"""The delivery buffer, driven by a scripted HTTP client: limits, outcomes, flush while failing."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from qm_otel.signals.delivery import SpanDelivery, _retry_after, deliverable


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
        self.closed = False

    def shutdown(self) -> None:
        self.closed = True


def delivery(answers: list[Result], **limits: Any) -> tuple[SpanDelivery, Client]:
    client = Client(answers)
    encode = lambda batch: (b"".join(batch), len(batch))  # noqa: E731 - a batch of byte strings
    limits = {"max_items": 100, "max_bytes": 10_000, **limits}
    return SpanDelivery(Inner(client), "traces", encode, **limits), client


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
    from qm_otel import instruments
    from qm_otel.testing import Capture, reset

    qm_otel.setup(traces_exporter="none", metrics_exporter="none", logs_exporter="none", **Capture().setup_kwargs())
    reset()
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        instruments.current().telemetry_dropped.add(3, {"signal": "logs", "reason": "shutdown"})
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []
