"""Per-record cost of ``http.server.request.duration``: the SDK's ``Histogram.record`` against qm-otel's fast one.

``python -m benchmarks.histogram_micro [--records N] [--repeat R]``: each case records the same
request-shaped measurements (the middleware's attribute dict: method, scheme, protocol version,
route, status code; a rotation of routes and statuses) through the SDK's histogram on one meter
provider and through :func:`qm_otel.signals.histograms.fast_histogram` on another, with the request's
context carrying a sampled span (the trace-based exemplar filter keeps an exemplar) or an unsampled
one, and one reader (cumulative, as the periodic OTLP reader by default and Prometheus) or two (a
cumulative and a delta one). A reader collects between repeats, as a periodic reader would. Printed:
the best repeat's µs per record (wall clock, one thread; the two variants' repeats interleaved, so
a busy machine slows both alike), and the ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from qm_otel.signals import histograms

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0)
ROUTES = ("/api/items/{id}", "/api/items", "/healthz", "/api/users/{id}/orders")
STATUSES = (200, 200, 200, 201, 404, 500)


def _attributes() -> list[dict[str, Any]]:
    made = []
    for index in range(24):
        status = STATUSES[index % len(STATUSES)]
        attributes: dict[str, Any] = {"http.request.method": "GET" if index % 3 else "POST", "url.scheme": "http",
                                      "network.protocol.version": "1.1", "http.route": ROUTES[index % len(ROUTES)],
                                      "http.response.status_code": status}
        if status >= 500:
            attributes["error.type"] = str(status)
        made.append(attributes)
    return made


def _context(sampled: bool) -> Any:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=flags))
    return trace.set_span_in_context(span)


def _provider(readers: int, fast: bool) -> tuple[Callable[..., None], list[InMemoryMetricReader]]:
    made = [InMemoryMetricReader(), InMemoryMetricReader(
        preferred_temporality={Histogram: AggregationTemporality.DELTA})][:readers]
    provider = MeterProvider(metric_readers=made, shutdown_on_exit=False)
    if fast:
        histograms.install(provider)
    meter = provider.get_meter("qm_otel", "0", schema_url="https://opentelemetry.io/schemas/1.21.0")
    histogram = meter.create_histogram("http.server.request.duration", unit="s",
                                       description="Duration of HTTP server requests.",
                                       explicit_bucket_boundaries_advisory=BUCKETS)
    if fast:
        histogram = histograms.fast_histogram(provider, histogram)
        assert isinstance(histogram, histograms.FastHistogram)
    return histogram.record, made


def measure(readers: int, sampled: bool, records: int, repeat: int) -> tuple[float, float]:
    """µs per record (best repeat) through the SDK's histogram and through the fast one, repeats interleaved."""
    attributes = _attributes()
    context = _context(sampled)
    pairs = [((index % 97) / 40.0, attributes[index % len(attributes)]) for index in range(records)]
    best = {False: float("inf"), True: float("inf")}
    made = {fast: _provider(readers, fast) for fast in (False, True)}
    for _ in range(repeat):
        for fast, (record, readers_made) in made.items():
            started = time.perf_counter()
            for value, attrs in pairs:
                record(value, attrs, context=context)
            best[fast] = min(best[fast], time.perf_counter() - started)
            for reader in readers_made:  # a collection between repeats, as a periodic reader would
                reader.get_metrics_data()
    return best[False] / records * 1e6, best[True] / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'case':<34} {'SDK µs':>8} {'fast µs':>8} {'ratio':>6}")
    for readers in (1, 2):
        for sampled in (True, False):
            sdk, fast = measure(readers, sampled, args.records, args.repeat)
            case = f"{readers} reader{'s' if readers > 1 else ''}, {'sampled' if sampled else 'unsampled'} span"
            print(f"{case:<34} {sdk:8.2f} {fast:8.2f} {sdk / fast:5.1f}x")


if __name__ == "__main__":
    main()
