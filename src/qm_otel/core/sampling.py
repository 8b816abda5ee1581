"""Ratio sampling that keeps its ratio for every kind of trace ID qm-otel makes.

The SDK's ``TraceIdRatioBased`` decides on the low 64 bits of the trace ID. Trace IDs taken from
UUIDv4 correlation IDs fix two of those bits (the variant, ``10``), so at ratio 0.5 it samples
none of them. qm-otel decides on a 64-bit mix of the whole 128-bit ID instead (high XOR low, then
the SplitMix64 finaliser): uniform for random, UUID-derived and hash-derived IDs alike, and the
same decision for the same trace ID in every qm-otel service.

>>> sampler = CorrelationRatioSampler(0.5)
>>> sampler.get_description()
'QmOtelTraceIdRatio{0.5}'
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = ["CorrelationRatioSampler", "mix64", "ratio_sampler"]

_MASK = (1 << 64) - 1


def mix64(trace_id: int) -> int:
    """A well-spread 64-bit value from all 128 bits of ``trace_id``."""
    x = ((trace_id >> 64) ^ trace_id) & _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class CorrelationRatioSampler(TraceIdRatioBased):
    """``TraceIdRatioBased`` deciding on :func:`mix64` of the trace ID instead of its low 64 bits."""

    def should_sample(  # noqa: PLR0917 - the SDK's signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Sample when the mixed trace ID falls under the ratio's bound."""
        return super().should_sample(parent_context, mix64(trace_id), name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        """Name and ratio, as the SDK's samplers describe themselves."""
        return f"QmOtelTraceIdRatio{{{self.rate}}}"


def ratio_sampler(ratio: float, parent_based: bool = True) -> Sampler:
    """The sampler for a configured ratio: parent-based unless asked otherwise."""
    root = CorrelationRatioSampler(ratio)
    return ParentBased(root) if parent_based else root
