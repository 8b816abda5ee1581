"""``qm-otel check``: probe the stack's endpoints and say which work."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

__all__ = ["Endpoint", "Result", "check_endpoints", "default_endpoints"]


@dataclass(frozen=True)
class Endpoint:
    """What to probe: an HTTP GET expecting 2xx, or (``tcp``) only a TCP connection."""

    name: str
    url: str
    tcp: bool = False


@dataclass(frozen=True)
class Result:
    """One probe's outcome."""

    name: str
    url: str
    ok: bool
    detail: str


def default_endpoints(host: str = "127.0.0.1") -> dict[str, Endpoint]:
    """The compose stack's published endpoints (docker-compose.yml binds them to 127.0.0.1)."""
    table = {
        "collector": (f"http://{host}:13133/", False),
        "collector-otlp": (f"http://{host}:4318/", True),
        "loki": (f"http://{host}:3100/ready", False),
        "tempo": (f"http://{host}:3200/ready", False),
        "prometheus": (f"http://{host}:9090/-/ready", False),
        "alertmanager": (f"http://{host}:9093/-/ready", False),
        "grafana": (f"http://{host}:3000/api/health", False),
    }
    return {name: Endpoint(name, url, tcp) for name, (url, tcp) in table.items()}


def _probe(endpoint: Endpoint, client: httpx.Client, timeout_s: float) -> Result:
    if endpoint.tcp:
        parts = urlsplit(endpoint.url)
        try:
            with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=timeout_s):
                return Result(endpoint.name, endpoint.url, True, "accepting connections")
        except OSError as exc:
            return Result(endpoint.name, endpoint.url, False, f"no connection ({exc.strerror or exc})")
    try:
        response = client.get(endpoint.url)
    except httpx.HTTPError as exc:
        return Result(endpoint.name, endpoint.url, False, f"no answer ({type(exc).__name__})")
    body = response.text.strip().replace("\n", " ")[:60]
    return Result(endpoint.name, endpoint.url, response.is_success, f"HTTP {response.status_code} {body}")


def check_endpoints(endpoints: dict[str, Endpoint], timeout_s: float = 3.0) -> list[Result]:
    """Probe every endpoint (one at a time, each bounded by ``timeout_s``)."""
    with httpx.Client(timeout=timeout_s) as client:
        return [_probe(endpoint, client, timeout_s) for endpoint in endpoints.values()]
