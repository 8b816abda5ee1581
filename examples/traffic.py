"""A small, endless traffic generator for the demo service (the `traffic` service of docker-compose.yml).

    python -m examples.traffic                      # against http://demo:8000
    TRAFFIC_TARGET=http://127.0.0.1:8000 python -m examples.traffic

Each round hits /, /items/42, /checkout/sku-N (with ``X-Correlation-ID: order-N``), sometimes
/items/0 (a 404), /slow and ``POST /events``, then sleeps. The flaky inventory behind /checkout
fails on its 2nd to 4th call, so the circuit breaker opens early on. SIGTERM or SIGINT ends
the loop after the current request.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from types import FrameType

import httpx

TARGET = os.environ.get("TRAFFIC_TARGET", "http://demo:8000")
#: seconds between two rounds
PAUSE_S = float(os.environ.get("TRAFFIC_PAUSE_S", "1.0"))

_stop = threading.Event()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    print(f"traffic: signal {signum}, stopping", flush=True)
    _stop.set()


def _request(client: httpx.Client, method: str, path: str, headers: dict[str, str] | None = None) -> None:
    if _stop.is_set():
        return
    try:
        response = client.request(method, path, headers=headers)
    except httpx.HTTPError as exc:
        print(f"traffic: {method} {path} failed: {exc!r}", flush=True)
        _stop.wait(2.0)  # the demo is restarting or not up yet
        return
    print(f"traffic: {method} {path} -> {response.status_code}", flush=True)


def run_round(client: httpx.Client, order: int) -> None:
    """One round of requests against the demo service."""
    _request(client, "GET", "/")
    _request(client, "GET", "/items/42")
    _request(client, "GET", f"/checkout/sku-{order % 7}", headers={"X-Correlation-ID": f"order-{order}"})
    if random.random() < 0.2:
        _request(client, "GET", "/items/0")
    if order % 5 == 0:
        _request(client, "GET", "/slow")
    if order % 10 == 0:
        _request(client, "POST", "/events")


def main() -> int:
    """Send rounds of requests until SIGTERM/SIGINT."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"traffic: sending requests to {TARGET} every {PAUSE_S} s", flush=True)
    order = 0
    with httpx.Client(base_url=TARGET, timeout=10.0) as client:
        while not _stop.is_set():
            order += 1
            started = time.monotonic()
            run_round(client, order)
            _stop.wait(max(0.0, PAUSE_S - (time.monotonic() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
