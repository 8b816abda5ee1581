"""The resource every signal carries: service, environment, instance, host, process, distro."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource

from qm_otel._version import __version__
from qm_otel.core.config import Settings

__all__ = ["DEFAULT_DETECTORS", "DETECTORS_VARIABLE", "build_resource"]

#: the SDK's variable naming the resource detectors it runs
DETECTORS_VARIABLE = "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"
#: the detectors ``setup()`` names there when the user did not: host, OS and process attributes. Named
#: in the variable, not passed to the SDK, because the SDK re-runs the process-dependent ones after
#: ``fork`` only when named there (``setup()`` sets it only while its pipeline runs)
DEFAULT_DETECTORS = "host,os,process"


def build_resource(settings: Settings) -> Resource:
    """The resource for ``settings``, merged with ``OTEL_RESOURCE_ATTRIBUTES`` and the SDK's detectors.

    Host, OS and process attributes come from the SDK's detectors, those named in
    :data:`DETECTORS_VARIABLE` (``setup()`` names :data:`DEFAULT_DETECTORS` there before it builds
    the resource, unless the user set the variable).
    """
    return Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            "telemetry.distro.name": "qm-otel",
            "telemetry.distro.version": __version__,
        }
    )
