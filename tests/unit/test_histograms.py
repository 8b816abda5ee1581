"""qm-otel's fast request histograms against the SDK's own: what the readers get is the same.

The differential test records one sequence of measurements (hypothesis: attribute sets of several
orders and value types, values on and around the bucket edges, contexts with and without a sampled
span, collections in between) through the SDK's histograms on one meter provider and through the
fast ones on another, the clock of both (the SDK's and qm-otel's ``time_ns``) stepped once per
operation, so every timestamp must be equal too: creation (start) times, collection times,
exemplar times. Compared after every collection: the in-memory readers' data (a cumulative and a
delta reader collecting independently), the periodic readers' exports to an in-memory exporter
(cumulative and delta) and their OTLP encoding, and the Prometheus reader's exposition text.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from enum import IntEnum
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Counter,
    ExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.semconv._incubating.metrics.http_metrics import create_http_server_request_body_size
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, generate_latest

from qm_otel.signals import histograms
from qm_otel.signals.histograms import FastHistogram, fast_histogram

SCHEMA_URL = "https://opentelemetry.io/schemas/1.21.0"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0)
SIZE_EDGES = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
RESOURCE = Resource({"service.name": "checkout", "service.instance.id": "i-1"})
CLOCKS = (
    "opentelemetry.sdk.metrics._internal.instrument.time_ns",
    "opentelemetry.sdk.metrics._internal._view_instrument_match.time_ns",
    "opentelemetry.sdk.metrics._internal.metric_reader_storage.time_ns",
    "opentelemetry.sdk.metrics._internal.measurement_consumer.time_ns",
    "qm_otel.signals.histograms.time_ns",
)


class Status(IntEnum):
    OK = 200


class CustomFilter(ExemplarFilter):
    def should_sample(self, value: float, time_unix_nano: int, attributes: Any, context: Any) -> bool:
        return True


#: attribute sets: orders, types the SDK tells apart (1, 1.0, True; an IntEnum), what its cleaning changes
ATTRIBUTES: list[Any] = [
    {"http.request.method": "GET", "url.scheme": "http", "http.route": "/items/{id}", "http.response.status_code": 200},
    {"http.response.status_code": 200, "http.route": "/items/{id}", "url.scheme": "http", "http.request.method": "GET"},
    {"http.request.method": "GET", "url.scheme": "http", "http.route": "/items/{id}",
     "http.response.status_code": 200.0},
    {"http.request.method": "GET", "url.scheme": "http", "http.route": "/items/{id}",
     "http.response.status_code": Status.OK},
    {"http.request.method": "POST", "http.response.status_code": 500, "error.type": "500"},
    {"flag": 1}, {"flag": True}, {"flag": 1.0}, {"flag": False}, {"flag": 0},
    {"tags": ["a", "b"]}, {"tags": ("a", "b")},
    {"": "dropped", "http.request.method": "GET"}, {"http.request.method": "GET"},
    {}, None,
]


def _span_context(sampled: bool) -> otel_context.Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(0xABC, 0x123 + sampled, False, flags)))


#: the context a measurement is recorded with: (context argument, context attached while recording)
CONTEXTS: list[tuple[Any, Any]] = [
    (None, None),
    (_span_context(True), None),
    (_span_context(False), None),
    (trace.set_span_in_context(INVALID_SPAN), None),
    (otel_context.Context(), _span_context(True)),  # an empty context is falsy: the SDK reads the current one
    (None, _span_context(True)),
    (None, _span_context(False)),
]


def _edges(edges: tuple[float, ...]) -> st.SearchStrategy[float]:
    edge = st.sampled_from(edges)
    return st.one_of(edge, edge.map(lambda e: math.nextafter(e, math.inf)),
                     edge.map(lambda e: math.nextafter(e, -math.inf)).filter(lambda v: v >= 0))


DURATIONS = st.one_of(_edges(BUCKETS), st.floats(0, 20, allow_nan=False), st.integers(0, 12),
                      st.sampled_from([0, 0.0, -0.0, 1e-300, 1e300]), st.sampled_from([-1.0, math.nan, math.inf]))
SIZES = st.one_of(st.sampled_from(SIZE_EDGES), st.integers(0, 20_000), st.sampled_from(SIZE_EDGES).map(lambda e: e + 1))


@st.composite
def operations(draw: st.DrawFn, readers: int) -> list[tuple[Any, ...]]:
    made: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["duration", "duration", "duration", "size", "counter", "other", "collect"]))
        if kind == "collect":
            made.append(("collect", draw(st.integers(0, readers - 1))))
        else:
            value = draw(SIZES if kind in ("size", "counter") else DURATIONS)
            made.append((kind, value, draw(st.integers(0, len(ATTRIBUTES) - 1)),
                         draw(st.integers(0, len(CONTEXTS) - 1))))
    return [*made, *(("collect", reader) for reader in range(readers))]


class MemoryExporter(MetricExporter):
    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={Histogram: temporality, Counter: temporality})
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _point(point: Any) -> str:
    """Everything of a data point, types included (3 and 3.0 differ, so do attribute orders)."""
    return repr(dataclasses.asdict(point))


def normalised(data: MetricsData | None) -> Any:
    """The collection, scopes and metrics sorted by name (their order carries nothing); points as they are."""
    if data is None:
        return None
    made = []
    for resource_metrics in data.resource_metrics:
        scopes = []
        for scope_metrics in resource_metrics.scope_metrics:
            metrics = [(m.name, m.description, m.unit, type(m.data).__name__,
                        getattr(m.data, "aggregation_temporality", None), getattr(m.data, "is_monotonic", None),
                        [_point(p) for p in m.data.data_points]) for m in scope_metrics.metrics]
            scope = scope_metrics.scope
            scopes.append((scope.name, scope.version, scope.schema_url, repr(scope.attributes),
                           scope_metrics.schema_url, sorted(metrics, key=lambda m: m[0])))
        made.append((repr(resource_metrics.resource.attributes), resource_metrics.schema_url,
                     sorted(scopes, key=lambda s: (s[0], s[1] or ""))))
    return made


def encoded(data: MetricsData | None) -> bytes | None:
    """The OTLP request the exporter would send, scopes and metrics in the normalised order."""
    if data is None:
        return None
    from opentelemetry.sdk.metrics.export import ResourceMetrics, ScopeMetrics

    ordered = MetricsData([ResourceMetrics(
        rm.resource, sorted((ScopeMetrics(sm.scope, sorted(sm.metrics, key=lambda m: m.name), sm.schema_url)
                             for sm in rm.scope_metrics), key=lambda sm: sm.scope.name), rm.schema_url)
        for rm in data.resource_metrics])
    return bytes(encode_metrics(ordered).SerializeToString(deterministic=True))


def families(text: str) -> list[str]:
    """The exposition text's metric families (each ``# HELP`` block), sorted: their order carries nothing."""
    blocks = ("\n" + text).split("\n# HELP ")
    return sorted(block.strip() for block in blocks if block.strip())


class Pipeline:
    """A meter provider with qm-otel's instruments on it: the SDK's histograms, or the fast ones."""

    def __init__(self, kind: str, exemplar_filter: ExemplarFilter, *, fast: bool) -> None:
        self.kind = kind
        self.registry = CollectorRegistry()
        self.exporters: list[MemoryExporter] = []
        readers: list[MetricReader]
        if kind == "in-memory":
            readers = [InMemoryMetricReader(), InMemoryMetricReader(
                preferred_temporality={Histogram: AggregationTemporality.DELTA, Counter: AggregationTemporality.DELTA})]
        elif kind == "periodic":
            self.exporters = [MemoryExporter(AggregationTemporality.CUMULATIVE),
                              MemoryExporter(AggregationTemporality.DELTA)]
            readers = [PeriodicExportingMetricReader(e, export_interval_millis=math.inf) for e in self.exporters]
        else:
            readers = [PrometheusMetricReader(registry=self.registry), InMemoryMetricReader(
                preferred_temporality={Histogram: AggregationTemporality.DELTA})]
        self.readers = readers
        self.provider = MeterProvider(metric_readers=readers, resource=RESOURCE, exemplar_filter=exemplar_filter,
                                      shutdown_on_exit=False)
        if fast:
            histograms.install(self.provider)
        meter = self.provider.get_meter("qm_otel", "1.2.3", schema_url=SCHEMA_URL)
        self.duration = meter.create_histogram("http.server.request.duration", unit="s",
                                               description="Duration of HTTP server requests.",
                                               explicit_bucket_boundaries_advisory=BUCKETS)
        self.size = create_http_server_request_body_size(meter)
        self.counter = meter.create_counter("qm_otel.test.requests", unit="{request}")
        self.other = self.provider.get_meter("other.library", "0.1").create_histogram("other.duration", unit="s")
        if fast:
            self.duration = fast_histogram(self.provider, self.duration)
            self.size = fast_histogram(self.provider, self.size)
            assert isinstance(self.duration, FastHistogram)
            assert isinstance(self.size, FastHistogram)

    def run(self, operation: tuple[Any, ...]) -> Any:
        if operation[0] == "collect":
            return self.collect(operation[1])
        kind, value, attributes_index, context_index = operation
        attributes = ATTRIBUTES[attributes_index]
        context, attached = CONTEXTS[context_index]
        token = otel_context.attach(attached) if attached is not None else None
        try:
            if kind == "counter":
                self.counter.add(value, attributes)
            else:
                getattr(self, kind).record(value, attributes, context=context)
        finally:
            if token is not None:
                otel_context.detach(token)
        return None

    def collect(self, index: int) -> Any:
        reader = self.readers[index]
        if isinstance(reader, InMemoryMetricReader):
            data = reader.get_metrics_data()
            return normalised(data), encoded(data)
        if isinstance(reader, PeriodicExportingMetricReader):
            exporter = self.exporters[index]
            before = len(exporter.exported)
            reader.collect()
            data = exporter.exported[-1] if len(exporter.exported) > before else None
            return normalised(data), encoded(data)
        return families(generate_latest(self.registry).decode())


@contextmanager
def stepped_clock() -> Iterator[list[int]]:
    """One clock for the SDK and qm-otel: what ``time_ns`` returns until the test steps it (and fixed draws)."""
    now = [1_700_000_000_000_000_000]

    def clock() -> int:
        return now[0]

    with ExitStack() as stack:
        for target in CLOCKS:
            stack.enter_context(mock.patch(target, clock))
        # the counter's reservoir (SimpleFixedSizeExemplarReservoir) draws at random: the same draws for both
        stack.enter_context(mock.patch("opentelemetry.sdk.metrics._internal.exemplar.exemplar_reservoir.randrange",
                                       lambda start, stop: (now[0] // 1000) % stop))
        yield now


FILTERS = {"trace_based": TraceBasedExemplarFilter, "always_on": AlwaysOnExemplarFilter,
           "always_off": AlwaysOffExemplarFilter}


@pytest.mark.parametrize("exemplar_filter", FILTERS)
@pytest.mark.parametrize("kind", ["in-memory", "periodic", "prometheus"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_readers_get_what_the_sdk_histogram_gives(kind: str, exemplar_filter: str, data: st.DataObject) -> None:
    sequence = data.draw(operations(2))
    with stepped_clock() as now:
        sdk = Pipeline(kind, FILTERS[exemplar_filter](), fast=False)
        fast = Pipeline(kind, FILTERS[exemplar_filter](), fast=True)
        for step, operation in enumerate(sequence):
            now[0] += 1000
            expected = sdk.run(operation)
            got = fast.run(operation)
            assert got == expected, f"operation {step}: {operation}"


def test_the_sdk_exports_no_stream_of_its_own_for_a_fast_histogram() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    histograms.install(provider)
    meter = provider.get_meter("qm_otel", "1", schema_url=SCHEMA_URL)
    instrument = meter.create_histogram("http.server.request.duration", unit="s")
    fast = fast_histogram(provider, instrument)
    assert fast_histogram(provider, instrument) is fast  # a second middleware gets the same one
    assert fast_histogram(provider, fast) is fast
    fast.record(0.2, {"a": "b"})
    again = meter.create_histogram("http.server.request.duration", unit="s")  # the same SDK instrument, by name
    assert again is instrument
    again.record(0.3, {"a": "b"})  # goes to the fast histogram
    data = reader.get_metrics_data()
    assert data is not None
    named = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
             if m.name == "http.server.request.duration"]
    assert len(named) == 1
    assert [p.count for p in named[0].data.data_points] == [2]
    storage = provider._measurement_consumer._reader_storages[reader]
    assert instrument not in storage._instrument_view_instrument_matches


def test_with_no_sdk_metric_at_all_the_reader_still_gets_the_fast_one() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    histograms.install(provider)
    fast = fast_histogram(provider, provider.get_meter("qm_otel").create_histogram("d"))
    assert reader.get_metrics_data() is None
    fast.record(1.0, {"a": "b"})
    data = reader.get_metrics_data()
    assert data is not None
    assert data.resource_metrics[0].resource is RESOURCE
    assert data.resource_metrics[0].scope_metrics[0].metrics[0].name == "d"


def _fast_or_not(readers: list[MetricReader], *, install: bool = True, **provider_options: Any) -> Any:
    provider = MeterProvider(metric_readers=readers, shutdown_on_exit=False, **provider_options)
    if install:
        histograms.install(provider)
    instrument = provider.get_meter("qm_otel", "1").create_histogram(
        "http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=BUCKETS)
    return instrument, fast_histogram(provider, instrument)


class CustomReader(MetricReader):
    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        pass

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class SubclassedReader(InMemoryMetricReader):
    pass


@pytest.mark.parametrize("case", [
    "not installed", "a view matches it", "custom exemplar filter", "unknown reader", "subclassed reader",
    "exponential histograms", "reader's own buckets", "no min/max", "no reader",
])
def test_what_falls_back_to_the_sdk_histogram(case: str) -> None:
    readers: list[MetricReader] = [InMemoryMetricReader()]
    options: dict[str, Any] = {}
    install = True
    if case == "not installed":
        install = False
    elif case == "a view matches it":
        options["views"] = [View(instrument_name="http.server.*")]
    elif case == "custom exemplar filter":
        options["exemplar_filter"] = CustomFilter()
    elif case == "unknown reader":
        readers.append(CustomReader())
    elif case == "subclassed reader":
        readers = [SubclassedReader()]
    elif case == "exponential histograms":
        readers.append(InMemoryMetricReader(preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()}))
    elif case == "reader's own buckets":
        readers.append(InMemoryMetricReader(
            preferred_aggregation={Histogram: ExplicitBucketHistogramAggregation(boundaries=(1.0, 2.0))}))
    elif case == "no min/max":
        readers.append(InMemoryMetricReader(
            preferred_aggregation={Histogram: ExplicitBucketHistogramAggregation(record_min_max=False)}))
    elif case == "no reader":
        readers = []
    instrument, made = _fast_or_not(readers, install=install, **options)
    assert made is instrument
    if case not in ("not installed", "a view matches it", "custom exemplar filter"):  # no reader was wrapped
        assert not any(isinstance(reader._collect, histograms._MergingCollect) for reader in readers)


def test_what_stays_fast() -> None:
    _instrument, made = _fast_or_not([InMemoryMetricReader(preferred_aggregation={
        Histogram: ExplicitBucketHistogramAggregation()})], views=[View(instrument_name="other.*")])
    assert isinstance(made, FastHistogram)


def test_invalid_boundaries_stay_the_sdk_s_so_they_raise_as_the_sdk_does() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    histograms.install(provider)
    instrument = provider.get_meter("qm_otel").create_histogram("d", explicit_bucket_boundaries_advisory=(2.0, 1.0))
    assert fast_histogram(provider, instrument) is instrument
    with pytest.raises(ValueError, match="strictly increasing"):
        instrument.record(1.0)


def test_no_op_providers_and_instruments_are_returned_as_they_are() -> None:
    histograms.install(NoOpMeterProvider())
    no_op = NoOpMeterProvider().get_meter("qm_otel").create_histogram("d")
    assert fast_histogram(NoOpMeterProvider(), no_op) is no_op
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    histograms.install(provider)
    counter = provider.get_meter("qm_otel").create_counter("c")
    assert fast_histogram(provider, counter) is counter  # type: ignore[arg-type]
    other = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    foreign = other.get_meter("qm_otel").create_histogram("d")
    assert fast_histogram(provider, foreign) is foreign


def test_a_disabled_meter_records_nothing_as_the_sdk_s() -> None:
    from opentelemetry.sdk.metrics._internal import _MeterConfig

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False,
                             _meter_configurator=lambda scope: _MeterConfig(is_enabled=scope.name != "qm_otel"))
    histograms.install(provider)
    fast = fast_histogram(provider, provider.get_meter("qm_otel").create_histogram("d"))
    assert isinstance(fast, FastHistogram)
    fast.record(1.0, {"a": "b"})
    assert reader.get_metrics_data() is None
    provider._set_meter_configurator(meter_configurator=lambda scope: _MeterConfig(is_enabled=True))
    fast.record(1.0, {"a": "b"})
    assert reader.get_metrics_data() is not None


def test_refused_measurements_are_reported_as_the_sdk_reports_them(caplog: pytest.LogCaptureFixture) -> None:
    _instrument, fast = _fast_or_not([InMemoryMetricReader()])
    for value in (-1.0, math.nan, math.inf):
        fast.record(value, {"a": "b"})
    assert [r.getMessage() for r in caplog.records] == [
        "Record amount must be non-negative on Histogram http.server.request.duration.",
        "Record amount nan is not finite on Histogram http.server.request.duration, ignoring measurement.",
        "Record amount inf is not finite on Histogram http.server.request.duration, ignoring measurement.",
    ]
    assert {r.name for r in caplog.records} == {"opentelemetry.sdk.metrics._internal.instrument"}


def test_a_reader_added_later_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    histograms.install(provider)
    fast = fast_histogram(provider, provider.get_meter("qm_otel").create_histogram("d"))
    provider.add_metric_reader(InMemoryMetricReader())
    fast.record(1.0)
    reader.get_metrics_data()
    reader.get_metrics_data()
    warned = [r for r in caplog.records if "added to the meter provider after setup()" in r.getMessage()]
    assert len(warned) == 1


def test_the_meter_provider_builder_installs_the_merging(monkeypatch: pytest.MonkeyPatch) -> None:
    from qm_otel.core.config import resolve_settings
    from qm_otel.signals import metrics

    monkeypatch.setattr(metrics.metrics, "set_meter_provider", lambda provider: None)
    reader = InMemoryMetricReader()
    provider, _instruments = metrics.build_meter_provider(
        resolve_settings({"metrics_exporter": "none"}, {}), RESOURCE, [reader])
    made = fast_histogram(provider, provider.get_meter("qm_otel").create_histogram("d"))
    assert isinstance(made, FastHistogram)
    made.record(0.5, {"a": "b"})
    data = reader.get_metrics_data()
    assert data is not None
    assert "d" in {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def test_threads_recording_at_once_give_the_exact_totals() -> None:
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[cumulative, delta], shutdown_on_exit=False)
    histograms.install(provider)
    fast = fast_histogram(provider, provider.get_meter("qm_otel").create_histogram(
        "d", explicit_bucket_boundaries_advisory=(10, 20, 30)))
    threads_count, records = 6, 3000
    sets = [{"route": "/a"}, {"route": "/b"}, {"route": "/c", "status": 200}]
    delta_points: list[Any] = []
    done = threading.Event()

    def work(offset: int) -> None:
        for index in range(records):
            fast.record((index + offset) % 40, sets[index % 3])

    def collect() -> None:
        while not done.is_set():
            data = delta.get_metrics_data()
            if data is not None:
                delta_points.extend(data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points)
            time.sleep(0.001)

    collector = threading.Thread(target=collect)
    collector.start()
    workers = [threading.Thread(target=work, args=(offset,)) for offset in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    collector.join()
    last = delta.get_metrics_data()
    if last is not None:
        delta_points.extend(last.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points)
    values = [(index + offset) % 40 for offset in range(threads_count) for index in range(records)]
    data = cumulative.get_metrics_data()
    assert data is not None
    points = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert sum(p.count for p in points) == len(values)
    assert sum(p.sum for p in points) == sum(values)
    expected_buckets = [sum(1 for v in values if v <= 10), sum(1 for v in values if 10 < v <= 20),
                        sum(1 for v in values if 20 < v <= 30), sum(1 for v in values if v > 30)]
    assert [sum(column) for column in zip(*(p.bucket_counts for p in points), strict=True)] == expected_buckets
    assert sum(p.count for p in delta_points) == len(values)
    assert sum(p.sum for p in delta_points) == sum(values)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_records_even_when_a_parent_thread_held_the_lock() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    histograms.install(provider)
    fast = fast_histogram(provider, provider.get_meter("qm_otel").create_histogram("d"))
    assert isinstance(fast, FastHistogram)
    fast.record(1.0, {"a": "b"})
    fast._lock.acquire()  # as if another thread were recording at the fork
    try:
        pid = os.fork()
        if pid == 0:  # the child: record and collect, then report through the exit code
            code = 1
            try:
                fast.record(2.0, {"a": "b"})
                data = reader.get_metrics_data()
                point = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]  # type: ignore[union-attr]
                code = 0 if (point.count, point.sum) == (2, 3.0) else 2
            finally:
                os._exit(code)
    finally:
        fast._lock.release()
    deadline = time.monotonic() + 30
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the parent's lock")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, [AggregationTemporality.CUMULATIVE]),
    ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}, [AggregationTemporality.DELTA]),
    ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "lowmemory"}, [AggregationTemporality.DELTA]),
    ({"OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram"}, None),
    ({"OTEL_METRICS_EXEMPLAR_FILTER": "always_off"}, [AggregationTemporality.CUMULATIVE]),
])
def test_the_otlp_exporter_s_environment_is_followed(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: list[AggregationTemporality] | None,
) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint="http://127.0.0.1:9/v1/metrics"),
                                           export_interval_millis=math.inf)
    instrument, made = _fast_or_not([reader])
    if expected is None:
        assert made is instrument
        return
    assert isinstance(made, FastHistogram)
    assert isinstance(reader._collect, histograms._MergingCollect)
    assert reader._collect._merger.temporalities == expected
    assert made._mode == (histograms._OFF if "OTEL_METRICS_EXEMPLAR_FILTER" in environment
                          else histograms._TRACE_BASED)


class _Sequential(IdGenerator):
    """Trace and span IDs 1, 2, 3, ...: two pipelines given the same requests give the same IDs."""

    def __init__(self) -> None:
        self.last = 0

    def generate_span_id(self) -> int:
        self.last += 1
        return self.last

    def generate_trace_id(self) -> int:
        self.last += 1
        return self.last


def test_the_middleware_s_histograms_through_the_fast_path_are_the_sdk_s() -> None:
    """qm-otel's server middleware, its three histograms made fast, against the same middleware on the SDK's."""
    import asyncio

    from opentelemetry.sdk.trace import TracerProvider
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from qm_otel.integrations import server

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * int(request.path_params["size"]))

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/items/{size:int}", item, methods=["GET", "POST"]), Route("/boom", boom)])
    requests = [("GET", "/items/3", b""), ("POST", "/items/700", b"y" * 30), ("GET", "/boom", b""),
                ("GET", "/missing", b""), ("GET", "/items/3", b""), ("POST", "/items/12000", b"z" * 5000)]

    def run(fast: bool) -> list[Any]:
        cumulative = InMemoryMetricReader()
        delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
        meter_provider = MeterProvider(metric_readers=[cumulative, delta], resource=RESOURCE, shutdown_on_exit=False)
        if fast:
            histograms.install(meter_provider)
        tracer_provider = TracerProvider(id_generator=_Sequential())
        middleware = server.ServerTelemetryMiddleware(app, tracer_provider=tracer_provider,
                                                      meter_provider=meter_provider)
        for name in ("_duration", "_request_size", "_response_size"):  # as server.py makes them with fast_histogram
            made = fast_histogram(meter_provider, getattr(middleware, name))
            assert isinstance(made, FastHistogram) == fast
            setattr(middleware, name, made)

        async def drive(method: str, path: str, body: bytes) -> None:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: Any) -> None:
                pass

            headers = [(b"host", b"shop.example"), (b"content-length", str(len(body)).encode())]
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                     "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                     "headers": headers, "client": ("10.0.0.2", 40000), "server": ("10.0.0.1", 80)}
            with suppress(RuntimeError):  # the /boom route's, re-raised by Starlette after its 500
                await middleware(scope, receive, send)

        seen = []
        ticks = iter(range(10_000))
        fake_time = mock.Mock(perf_counter=lambda: next(ticks) * 0.0137)
        with mock.patch.object(server, "time", fake_time), stepped_clock() as now:
            for index, (method, path, body) in enumerate(requests):
                now[0] += 1000
                asyncio.run(drive(method, path, body))
                if index % 2:
                    now[0] += 1000
                    seen.append((normalised(cumulative.get_metrics_data()), normalised(delta.get_metrics_data())))
        return seen

    assert run(fast=True) == run(fast=False)
