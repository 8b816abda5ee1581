"""The resource every signal carries: service, environment, instance, host, process, distro."""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import Resource

from qm_otel._version import __version__
from qm_otel.core.config import Settings

__all__ = ["build_resource"]


def build_resource(settings: Settings) -> Resource:
    """The resource for ``settings``, merged with ``OTEL_RESOURCE_ATTRIBUTES`` and the SDK's detectors.

    Host, OS and process attributes come from the SDK's detectors; qm-otel asks for them by
    default through ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` (left alone if the user set it),
    because the SDK re-runs the process-dependent ones after ``fork`` only when named there.
    """
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "host,os,process")
    return Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            "telemetry.distro.name": "qm-otel",
            "telemetry.distro.version": __version__,
        }
    )
