"""qm-otel's own aggregation of its request histograms, merged into what the SDK's readers collect.

The SDK's ``Histogram.record`` costs 13-25 µs a measurement (a ``Measurement`` object, the attributes
cleaned and hashed, the views matched, the exemplar filter and reservoir, the aggregation, once per
reader). :class:`FastHistogram` keeps the same state in a dictionary per attribute set: bucket counts,
count, sum, min, max and the exemplars the SDK's default reservoir for explicit buckets keeps (the last
measurement offered to each bucket, under the provider's exemplar filter). The Python SDK has no
``MetricProducer`` yet, so :func:`install` wraps the collect callback of each reader of a meter
provider (the periodic OTLP reader, the Prometheus reader, the in-memory reader): at collection the
reader gets the SDK's data with the fast histograms' points added, exactly as the SDK's own histogram
would have produced them — name, description, unit, scope, attributes (those of the first measurement
of the set), buckets, sum/min/max, start and end times, exemplars, the reader's temporality. The SDK
(1.45) has no cardinality limit, so neither has this.

:func:`fast_histogram` takes the SDK's histogram and returns the fast one when it can reproduce it
exactly, else the SDK's own (the same call signature): the provider was not installed, a reader of
it is not one qm-otel merges into (or prefers another histogram aggregation), a View matches the
instrument, the exemplar filter is not one of the SDK's three, or the boundaries are invalid. The
SDK instrument's ``record`` is then redirected to the fast one, so the SDK never holds a stream for it.

Each reader has a slot of its own in each attribute set (what the SDK keeps per reader storage), so
a cumulative and a delta reader each get their own intervals; the sum of a slot adds the values in
the order the SDK adds them, so sums are equal to the bit.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import threading
import weakref
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Histogram as APIHistogram
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Exemplar,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, Span
from opentelemetry.util.types import Attributes

from qm_otel.core import sdk_internals as sdk
from qm_otel.core.sdk_internals import (
    DEFAULT_BOUNDARIES,
    SPAN_KEY,
    ProxyMeterConfig,
    SDKHistogram,
    clean_attribute_value,
    hash_attributes,
)

__all__ = ["FastHistogram", "fast_histogram", "install"]

_logger = logging.getLogger("qm_otel")
#: the SDK's loggers: a refused measurement or attribute set is reported as the SDK reports it
_instrument_logger = logging.getLogger("opentelemetry.sdk.metrics._internal.instrument")
_measurement_logger = logging.getLogger("opentelemetry.sdk.metrics._internal.measurement")

_INF = math.inf
_OFF, _ALWAYS, _TRACE_BASED = 0, 1, 2
_FILTER_MODES: dict[type, int] = {
    AlwaysOffExemplarFilter: _OFF,
    AlwaysOnExemplarFilter: _ALWAYS,
    TraceBasedExemplarFilter: _TRACE_BASED,
}
#: attribute values the SDK's cleaning keeps as they are (exact types): such a set is looked up by its items
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})
#: a slot: [bucket counts, sum, min, max, exemplars per bucket or None]; an exemplar: (value, time, span, trace)
_COUNTS, _SUM, _MIN, _MAX, _EXEMPLARS = range(5)


def _plain(attributes: Attributes) -> bool:
    """Whether the SDK keeps ``attributes`` as they are (so equal items and types are one series)."""
    return type(attributes) is dict and all(
        type(key) is str and key and type(value) in _PLAIN for key, value in attributes.items())


class _Cell:
    """One attribute set: its attributes, start time, one slot per reader and what each reader kept."""

    __slots__ = ("attributes", "kept", "slots", "start")

    def __init__(self, attributes: dict[str, Any], start: int, slots: list[list[Any]]) -> None:
        self.attributes = attributes
        self.start = start
        self.slots = slots
        #: per reader: cumulative -> [counts, min, max, sum] so far; delta -> the previous collection's time
        self.kept: list[Any] = [None] * len(slots)


class FastHistogram(APIHistogram):
    """An explicit-bucket histogram aggregated by qm-otel, collected through the readers :func:`install` wrapped."""

    def __init__(self, instrument: Any, exemplar_mode: int, readers: int) -> None:
        self.name: str = instrument.name
        self.unit: str = instrument.unit
        self.description: str = instrument.description
        self.scope: InstrumentationScope = instrument.instrumentation_scope
        boundaries = sdk.instrument_boundaries(instrument)
        self._bounds: tuple[float, ...] = tuple(DEFAULT_BOUNDARIES if boundaries is None else boundaries)
        self._enabled = sdk.meter_enabled(instrument)
        self._mode = exemplar_mode
        self._readers = readers
        self._cells: dict[Any, _Cell] = {}  # by the SDK's key of the attribute set, in first-measurement order
        self._by_items: dict[tuple[Any, ...], _Cell] = {}  # by the items and value types of a plain dict
        self._lock = threading.Lock()
        self._collecting = [threading.Lock() for _ in range(readers)]
        _LIVE.add(self)

    def _reinit_locks(self) -> None:
        """In a forked child: the parent's threads may have held the locks; the data stays, as the SDK's."""
        self._lock = threading.Lock()
        self._collecting = [threading.Lock() for _ in range(self._readers)]

    def _new_slot(self) -> list[Any]:
        buckets = len(self._bounds) + 1
        return [[0] * buckets, 0, _INF, -_INF, [None] * buckets if self._mode else None]

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Record ``amount`` for ``attributes``, as the SDK's ``Histogram.record`` does."""
        if not self._enabled():
            return
        if not 0 <= amount < _INF:
            self._refuse(amount)
            return
        try:  # a plain dict seen before, by its keys, values and value types (1, 1.0 and True are three series)
            cell = self._by_items[(*attributes, *attributes.values(), *map(type, attributes.values()))]  # type: ignore[misc,union-attr]
        except (KeyError, TypeError, AttributeError):
            cell = self._cell(attributes)
        index = bisect_left(self._bounds, amount)
        exemplar: tuple[float, int, int | None, int | None] | None = None
        if self._mode:  # the SDK's exemplar filter, then its AlignedHistogramBucketExemplarReservoir
            span = (context or get_current()).get(SPAN_KEY)
            if span is None or not isinstance(span, Span):
                span = INVALID_SPAN
            if span != INVALID_SPAN:
                span_context = span.get_span_context()
                if self._mode == _ALWAYS or span_context.trace_flags.sampled:
                    exemplar = (amount, time_ns(), span_context.span_id, span_context.trace_id)
            elif self._mode == _ALWAYS:
                exemplar = (amount, time_ns(), None, None)
        with self._lock:
            for slot in cell.slots:
                slot[0][index] += 1
                slot[1] += amount
                if amount < slot[2]:  # noqa: PLR1730 - min() is a call, this a comparison (same result, ties too)
                    slot[2] = amount
                if amount > slot[3]:  # noqa: PLR1730
                    slot[3] = amount
                if exemplar is not None:
                    kept = slot[4]
                    earlier = kept[index]
                    # without a span, the SDK's bucket keeps the span of an earlier offer since its last collection
                    kept[index] = exemplar if exemplar[2] is not None or earlier is None else (
                        amount, exemplar[1], earlier[2], earlier[3])

    def _refuse(self, amount: float) -> None:
        if not math.isfinite(amount):
            _instrument_logger.warning("Record amount %s is not finite on Histogram %s, ignoring measurement.",
                                       amount, self.name)
        else:
            _instrument_logger.warning("Record amount must be non-negative on Histogram %s.", self.name)

    def _cell(self, attributes: Attributes) -> _Cell:
        """The attribute set's cell, found as the SDK finds its aggregation (cleaned, then keyed)."""
        cleaned: Attributes
        if attributes is not None and not isinstance(attributes, Mapping):
            _measurement_logger.warning("Invalid type '%s' for attributes. Expected a Mapping or None.",
                                        type(attributes))
            cleaned = None
        else:
            cleaned = None if attributes is None else clean_attribute_value(attributes, None)
        point = dict(cleaned) if cleaned else {}
        key = hash_attributes(point)
        cell = self._cells.get(key)
        if cell is None:
            with self._lock:
                cell = self._cells.get(key)
                if cell is None:
                    cell = _Cell(point, time_ns(), [self._new_slot() for _ in range(self._readers)])
                    self._cells[key] = cell
        if _plain(attributes):  # else every measurement is cleaned, warned about and keyed again, as the SDK does
            self._by_items[(*attributes, *attributes.values(), *map(type, attributes.values()))] = cell  # type: ignore[misc,union-attr]
        return cell

    def _collected(self, reader: int, temporality: AggregationTemporality, now: int) -> Metric | None:
        """The metric reader ``reader`` collects at ``now``: its intervals since its last collection."""
        with self._collecting[reader]:
            with self._lock:
                cells = list(self._cells.values())
                taken: list[list[Any] | None] = []
                for cell in cells:
                    slot = cell.slots[reader]
                    if slot[_MIN] < _INF:  # measured since this reader's last collection
                        cell.slots[reader] = self._new_slot()
                        taken.append(slot)
                    else:
                        taken.append(None)
            if temporality is AggregationTemporality.DELTA:
                points = self._delta(reader, cells, taken, now)
            else:
                points = self._cumulative(reader, cells, taken, now)
        if not points:
            return None
        return Metric(name=self.name, description=self.description, unit=self.unit,
                      data=HistogramData(data_points=points, aggregation_temporality=temporality))

    def _delta(self, reader: int, cells: list[_Cell], taken: list[list[Any] | None], now: int) -> list[Any]:
        points = []
        for cell, slot in zip(cells, taken, strict=True):
            start = cell.start if cell.kept[reader] is None else cell.kept[reader]
            cell.kept[reader] = now
            if slot is None:
                continue
            counts = slot[_COUNTS]
            points.append(HistogramDataPoint(
                attributes=cell.attributes, exemplars=self._exemplars(cell, slot), start_time_unix_nano=start,
                time_unix_nano=now, count=sum(counts), sum=slot[_SUM], bucket_counts=tuple(counts),
                explicit_bounds=self._bounds, min=slot[_MIN], max=slot[_MAX]))
        return points

    def _cumulative(self, reader: int, cells: list[_Cell], taken: list[list[Any] | None], now: int) -> list[Any]:
        points = []
        empty = [0] * (len(self._bounds) + 1)
        for cell, slot in zip(cells, taken, strict=True):
            kept = cell.kept[reader]
            if kept is None:
                kept = cell.kept[reader] = [empty, _INF, -_INF, 0]
            if slot is None:
                counts, sum_, min_, max_ = empty, 0, _INF, -_INF
            else:
                counts, sum_, min_, max_ = slot[_COUNTS], slot[_SUM], slot[_MIN], slot[_MAX]
            # the SDK's arithmetic, in its order: the interval first, then what came before
            kept[0] = [value + previous for value, previous in zip(counts, kept[0], strict=True)]
            kept[1] = min(min_, kept[1])
            kept[2] = max(max_, kept[2])
            kept[3] = sum_ + kept[3]
            points.append(HistogramDataPoint(
                attributes=cell.attributes, exemplars=[] if slot is None else self._exemplars(cell, slot),
                start_time_unix_nano=cell.start, time_unix_nano=now, count=sum(kept[0]), sum=kept[3],
                bucket_counts=tuple(kept[0]), explicit_bounds=self._bounds, min=kept[1], max=kept[2]))
        return points

    @staticmethod
    def _exemplars(cell: _Cell, slot: list[Any]) -> list[Exemplar]:
        kept = slot[_EXEMPLARS]
        if kept is None:
            return []
        # a measurement's attributes are the point's (one series, one key set): none left to filter in
        return [Exemplar({} if cell.attributes else None, value, time_unix_nano, span_id, trace_id)
                for value, time_unix_nano, span_id, trace_id in (e for e in kept if e is not None)]


_LIVE: weakref.WeakSet[FastHistogram] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for histogram in list(_LIVE):
        histogram._reinit_locks()
    for merger in list(_MERGERS.values()):
        merger.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Merger:
    """The fast histograms of one meter provider, merged into what each of its readers collects."""

    def __init__(self, provider: MeterProvider, temporalities: list[AggregationTemporality], refusal: str | None):
        self._consumer = sdk.provider_consumer(provider)
        self._configuration = sdk.provider_config(provider)
        self.temporalities = temporalities
        self.refusal = refusal
        self.histograms: dict[Any, FastHistogram] = {}  # by the SDK instrument they replace
        self.lock = threading.Lock()
        self._warned = False

    def merge(self, reader: int, data: MetricsData | None) -> MetricsData | None:
        """``data`` with the fast histograms' metrics for ``reader`` added to their scopes."""
        now = time_ns()
        found: dict[InstrumentationScope, list[Metric]] = {}
        for histogram in list(self.histograms.values()):
            metric = histogram._collected(reader, self.temporalities[reader], now)
            if metric is not None:
                found.setdefault(histogram.scope, []).append(metric)
        if not self._warned and sdk.consumer_reader_count(self._consumer) > len(self.temporalities):
            self._warned = True
            names = ", ".join(sorted({histogram.name for histogram in self.histograms.values()}))
            _logger.warning("qm-otel: a metric reader added to the meter provider after setup() does not get "
                            "qm-otel's request histograms (%s)", names)
        if not found:
            return data
        if data is None or not data.resource_metrics:
            resource = self._configuration.resource
            return MetricsData(resource_metrics=[ResourceMetrics(
                resource=resource, schema_url=resource.schema_url,
                scope_metrics=[_scope_metrics(scope, metrics) for scope, metrics in found.items()])])
        first, *rest = data.resource_metrics
        scopes = []
        for scope_metrics in first.scope_metrics:
            extra = found.pop(scope_metrics.scope, None)
            scopes.append(scope_metrics if extra is None else ScopeMetrics(
                scope=scope_metrics.scope, metrics=[*scope_metrics.metrics, *extra],
                schema_url=scope_metrics.schema_url))
        scopes.extend(_scope_metrics(scope, metrics) for scope, metrics in found.items())
        return MetricsData(resource_metrics=[
            ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url), *rest])


def _scope_metrics(scope: InstrumentationScope, metrics: list[Metric]) -> ScopeMetrics:
    """A scope the SDK's data lacked, as the SDK makes one (its schema URL is the scope's, None included)."""
    return ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url)  # type: ignore[arg-type]


class _MergingCollect:
    """A reader's collect callback: the SDK's collection, then the fast histograms' points for that reader."""

    __slots__ = ("_merger", "_reader", "_sdk_collect")

    def __init__(self, merger: _Merger, reader: int, sdk_collect: Any) -> None:
        self._merger = merger
        self._reader = reader
        self._sdk_collect = sdk_collect

    def __call__(self, metric_reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        data: MetricsData | None = self._sdk_collect(metric_reader, timeout_millis=timeout_millis)
        try:
            return self._merger.merge(self._reader, data)
        except Exception:  # a fault of qm-otel's must not cost the reader the SDK's own metrics
            _logger.exception("qm-otel: merging the request histograms into a metric collection failed")
            return data


_MERGERS: weakref.WeakKeyDictionary[MeterProvider, _Merger] = weakref.WeakKeyDictionary()


def _reader_types() -> tuple[type, ...]:
    """The readers whose collection qm-otel knows: every one collects through its collect callback."""
    known: list[type] = [PeriodicExportingMetricReader, InMemoryMetricReader]
    prometheus = sys.modules.get("opentelemetry.exporter.prometheus")  # imported if a reader of it exists
    if prometheus is not None:
        known += [getattr(prometheus, name) for name in ("PrometheusMetricReader", "_AutoPrometheusMetricReader")
                  if hasattr(prometheus, name)]
    return tuple(known)


def _unmergeable(reader: MetricReader, known: tuple[type, ...]) -> str | None:
    """Why qm-otel cannot merge into ``reader`` exactly as the SDK would feed it, or None."""
    if type(reader) not in known:
        return f"the metric reader {type(reader).__qualname__} is not one qm-otel merges into"
    aggregation: Any = sdk.reader_histogram_aggregation(reader)
    if type(aggregation) is ExplicitBucketHistogramAggregation:
        if sdk.aggregation_customised(aggregation):
            return f"the metric reader {type(reader).__qualname__} sets its own histogram buckets or drops min/max"
    elif type(aggregation) is not DefaultAggregation:
        return (f"the metric reader {type(reader).__qualname__} aggregates histograms as "
                f"{type(aggregation).__qualname__}")
    if sdk.reader_histogram_temporality(reader) not in (
            AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA):
        return f"the metric reader {type(reader).__qualname__} has no histogram temporality qm-otel knows"
    if sdk.reader_collect(reader) is None:
        return f"the metric reader {type(reader).__qualname__} is not registered"
    return None


def install(meter_provider: object) -> None:
    """Merge the fast histograms of ``meter_provider`` into every reader of it (once; only if all can be).

    Call it right after the provider is made, before its histograms are. When a reader cannot be merged
    into, no reader is touched and :func:`fast_histogram` returns the SDK's instruments.
    """
    if sdk.HISTOGRAM_NAMES is not None or not isinstance(meter_provider, MeterProvider) or meter_provider in _MERGERS:
        return
    readers = sdk.provider_readers(meter_provider)
    known = _reader_types()
    refusal = next((reason for reason in (_unmergeable(reader, known) for reader in readers) if reason), None)
    if refusal is None and not readers:
        refusal = "the meter provider has no metric reader"
    temporalities = [] if refusal else [sdk.reader_histogram_temporality(reader) for reader in readers]
    merger = _Merger(meter_provider, temporalities, refusal)
    if refusal is None:
        for index, reader in enumerate(readers):
            sdk.set_reader_collect(reader, _MergingCollect(merger, index, sdk.reader_collect(reader)))
    _MERGERS[meter_provider] = merger


def _refusal(merger: _Merger, instrument: Any) -> str | None:
    """Why ``instrument`` must stay the SDK's, or None."""
    if type(instrument) is not SDKHistogram:
        return "it is not the SDK's histogram"
    if sdk.instrument_consumer(instrument) is not merger._consumer:
        return "it was made by another meter provider"
    if not isinstance(sdk.instrument_meter_config(instrument), ProxyMeterConfig):
        return "it has no meter of the SDK's"
    return _configuration_refusal(merger, instrument)


def _configuration_refusal(merger: _Merger, instrument: Any) -> str | None:
    """Why the provider's configuration makes the SDK's output for ``instrument`` one qm-otel does not reproduce."""
    if type(merger._configuration.exemplar_filter) not in _FILTER_MODES:
        return f"the exemplar filter is {type(merger._configuration.exemplar_filter).__qualname__}"
    if any(sdk.view_matches(view, instrument) for view in merger._configuration.views):
        return "a View matches it"
    boundaries: Sequence[float] | None = sdk.instrument_boundaries(instrument)
    if boundaries is not None and not (
            all(math.isfinite(bound) for bound in boundaries)
            and all(low < high for low, high in itertools.pairwise(boundaries))):
        return "its bucket boundaries are not finite and increasing (the SDK raises on its first measurement)"
    return None


def fast_histogram(meter_provider: object, instrument: APIHistogram) -> APIHistogram:
    """The fast histogram in place of the SDK's ``instrument`` of ``meter_provider``, or ``instrument`` itself.

    The same instrument gets the same fast histogram. The fast one is used only when every reader of the
    provider was merged into by :func:`install` and qm-otel reproduces the SDK's output for ``instrument``
    exactly (see the module's documentation for what falls back).
    """
    if isinstance(instrument, FastHistogram):
        return instrument
    merger = _MERGERS.get(meter_provider) if isinstance(meter_provider, MeterProvider) else None
    if merger is None:
        return instrument
    refusal = merger.refusal or _refusal(merger, instrument)
    if refusal is not None:
        _logger.debug("qm-otel: %s records through the SDK: %s", getattr(instrument, "name", instrument), refusal)
        return instrument
    with merger.lock:
        fast = merger.histograms.get(instrument)
        if fast is None:
            fast = FastHistogram(instrument, _FILTER_MODES[type(merger._configuration.exemplar_filter)],
                                 len(merger.temporalities))
            merger.histograms[instrument] = fast
            # whoever records through the SDK's instrument (made again by name) records here: one stream
            setattr(instrument, "record", fast.record)  # noqa: B010 - an instance attribute over the method
    return fast
