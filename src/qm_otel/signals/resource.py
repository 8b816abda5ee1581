"""The resource every signal carries: service, environment, instance, host, process, distro."""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import Resource

from qm_otel._version import __version__
from qm_otel.config import Settings

__all__ = ["HashedResource", "build_resource"]


class HashedResource(Resource):
    """The SDK's ``Resource`` with its hash computed once.

    The OTLP encoders group every batch by resource, hashing the resource of each span and log
    record; the SDK's ``__hash__`` serialises all attributes to JSON each time (about a sixth of
    encoding a span). The attributes never change, so the hash is kept; ``merge`` (which the SDK
    calls to refresh process attributes after ``fork``) keeps the class.
    """

    _hash: int | None = None

    def __hash__(self) -> int:
        """The SDK's hash, computed on first use."""
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash

    def __eq__(self, other: object) -> bool:
        """Equal as the SDK defines it (attributes and schema URL)."""
        return super().__eq__(other)

    def merge(self, other: Resource) -> HashedResource:
        """The SDK's merge, keeping the cached-hash class."""
        merged = super().merge(other)
        return HashedResource(merged.attributes, merged.schema_url)


def build_resource(settings: Settings) -> Resource:
    """The resource for ``settings``, merged with ``OTEL_RESOURCE_ATTRIBUTES`` and the SDK's detectors.

    Host, OS and process attributes come from the SDK's detectors; qm-otel asks for them by
    default through ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` (left alone if the user set it),
    because the SDK re-runs the process-dependent ones after ``fork`` only when named there.
    """
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "host,os,process")
    created = Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            "telemetry.distro.name": "qm-otel",
            "telemetry.distro.version": __version__,
        }
    )
    return HashedResource(created.attributes, created.schema_url)
