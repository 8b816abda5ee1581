"""Ratio sampling keeps its ratio for random, UUID-derived and hash-derived trace IDs."""

from __future__ import annotations

import math
import random
import uuid

import pytest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from qm_otel.core.correlation import trace_id_for
from qm_otel.core.sampling import CorrelationRatioSampler, mix64, ratio_sampler

N = 20_000


def uuid7(milliseconds: int, random_bits: int) -> str:
    """A UUIDv7 (Python 3.11's uuid module predates it): 48-bit time, version 7, RFC variant."""
    value = (milliseconds << 80) | (random_bits & ((1 << 80) - 1))
    value = (value & ~(0xF << 76)) | (7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


rng = random.Random(20261123)  # fixed seed: the test is deterministic, the bound statistical
FAMILIES = {
    "random": [rng.getrandbits(128) or 1 for _ in range(N)],
    "uuid4": [trace_id_for(str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(N)],
    # time-ordered: consecutive milliseconds, so the high bits barely change
    "uuid7": [trace_id_for(uuid7(1_763_900_000_000 + n, rng.getrandbits(80))) for n in range(N)],
    "hash": [trace_id_for(f"order-{n}") for n in range(N)],
    "sequential-hex": [trace_id_for(format(n + 1, "032x")) for n in range(N)],
}


def sampled_fraction(sampler: TraceIdRatioBased, ids: list[int]) -> float:
    return sum(sampler.should_sample(None, trace_id, "span").decision.is_sampled() for trace_id in ids) / len(ids)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 0.9])
def test_the_configured_ratio_holds_for_every_kind_of_trace_id(family: str, ratio: float) -> None:
    fraction = sampled_fraction(CorrelationRatioSampler(ratio), FAMILIES[family])
    sigma = math.sqrt(ratio * (1 - ratio) / N)
    assert abs(fraction - ratio) < 5 * sigma, (family, ratio, fraction)


def test_the_sdk_sampler_is_skewed_for_uuid4_ids() -> None:
    # the reason this module exists: variant bits make the low 64 bits of a UUIDv4 >= 2**63
    assert sampled_fraction(TraceIdRatioBased(0.5), FAMILIES["uuid4"]) == 0.0


def test_edges_and_determinism() -> None:
    ids = FAMILIES["random"][:1000]
    assert sampled_fraction(CorrelationRatioSampler(0.0), ids) == 0.0
    assert sampled_fraction(CorrelationRatioSampler(1.0), ids) == 1.0
    assert [mix64(i) for i in ids[:10]] == [mix64(i) for i in ids[:10]]
    assert "ParentBased" in ratio_sampler(0.5).get_description()
    assert ratio_sampler(0.5, parent_based=False).get_description() == "QmOtelTraceIdRatio{0.5}"
