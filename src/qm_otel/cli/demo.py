"""``qm-otel demo``: serve the demo service with real uvicorn, drive traffic, show the telemetry.

With no collector answering at the OTLP endpoint, telemetry stays in-process (the SDK's
in-memory exporters) and is drawn in the terminal. With a collector up (the compose stack),
the same telemetry is also exported there and the demo says where to look in Grafana.
"""

from __future__ import annotations

import http.client
import importlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from rich.console import Console
from rich.table import Table

import qm_otel
from qm_otel.cli.terminal import draw_stalls, render
from qm_otel.core.config import resolve_settings
from qm_otel.testing import Capture

__all__ = ["TRAFFIC", "collector_reachable", "run_demo"]


@dataclass(frozen=True)
class Call:
    """One request of the demo's traffic."""

    method: str
    path: str
    #: the X-Correlation-ID the client sends, if any
    correlation_id: str | None = None
    #: seconds to wait before sending (to let a circuit breaker's recovery time pass)
    wait_s: float = 0.0


#: The traffic the demo drives: every route, a failing dependency, a 404 and a health probe.
#: Some calls send an X-Correlation-ID (a UUID, an order number, a rejected value) to show the mapping.
TRAFFIC = (
    Call("GET", "/"),
    Call("GET", "/items/42", "6f9619ff-8b86-d011-b42d-00cf4fc964ff"),
    Call("GET", "/items/0"),
    Call("GET", "/checkout/sku-1", "order-1001"),
    # an inventory outage: three failures open the breaker, the next checkout is refused at once
    Call("GET", "/checkout/sku-2", "order-1002"),
    Call("GET", "/checkout/sku-3", "order-1003"),
    Call("GET", "/checkout/sku-4", "order-1004"),
    Call("GET", "/checkout/sku-5", "order-1005"),
    # after the recovery time one trial call goes through, succeeds, and closes the breaker
    Call("GET", "/checkout/sku-6", "order-1006", wait_s=1.1),
    Call("GET", "/slow", "not a valid id!"),
    # a handler that blocks the event loop: the watchdog's record names the blocking line
    Call("GET", "/blocking", "order-1007"),
    Call("POST", "/events"),
    Call("GET", "/healthz"),
    Call("GET", "/readyz"),
    Call("GET", "/no-such-route"),
)


def collector_reachable(endpoint: str, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at the OTLP endpoint."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_app(import_string: str) -> Any:
    module_name, _, attribute = import_string.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    return getattr(module, attribute or "app")


def _serve(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="demo-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            message = "the demo service did not start"
            raise RuntimeError(message)
        time.sleep(0.05)
    return server, thread


def _request(port: int, call: Call) -> tuple[int, str | None]:
    """Send one request as an outside client would: plain ``http.client``, not traced or logged here."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"X-Correlation-ID": call.correlation_id} if call.correlation_id else {}
        connection.request(call.method, call.path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("x-correlation-id")
    finally:
        connection.close()


def _origin(call: Call, answered: str | None) -> str:
    """Where the answered correlation ID came from, in a few words."""
    if call.correlation_id is None:
        return "trace ID"
    if answered == call.correlation_id:
        return "client"
    return f"refused {call.correlation_id!r}"


def run_demo(app_path: str = "qm_otel.cli.demo_service:app", console: Console | None = None) -> int:
    """Run the demo; return the process exit code."""
    # a terminal's own width; COLUMNS when set (rich reads it); else 100 for a pipe or a log file
    console = console or Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 100)
    os.environ.setdefault("QM_OTEL_SERVICE_NAME", "qm-demo")
    os.environ.setdefault("QM_OTEL_LOG_FORMAT", "none")  # the records are drawn in each request's panel
    endpoint = resolve_settings({}, os.environ).exporter_endpoint
    online = collector_reachable(endpoint)
    if not online:
        for signal_name in ("TRACES", "METRICS", "LOGS"):
            os.environ[f"QM_OTEL_{signal_name}_EXPORTER"] = "none"
    capture = Capture()
    telemetry = qm_otel.setup(**capture.setup_kwargs())
    console.rule(f"[bold]qm-otel demo[/] · service {telemetry.settings.service_name}")
    where = f"the collector at {endpoint}" if online else f"memory (no collector answered at {endpoint})"
    console.print(f"telemetry → {where}", highlight=False)
    app = _load_app(app_path)
    port = _free_port()
    server, thread = _serve(app, port)
    traffic = Table(title="the demo's requests", header_style="bold", box=None, pad_edge=False)
    traffic.add_column("request", no_wrap=True)
    traffic.add_column("status", justify="right", no_wrap=True)
    traffic.add_column("X-Correlation-ID answered", no_wrap=True)
    traffic.add_column("from", overflow="fold", style="dim")
    for call in TRAFFIC:
        if call.wait_s:
            traffic.add_row("(pause)", "", "", f"{call.wait_s:g} s: breaker recovery")
            time.sleep(call.wait_s)
        status, correlation_id = _request(port, call)
        traffic.add_row(f"{call.method} {call.path}", str(status), correlation_id or "-", _origin(call, correlation_id))
    console.print(traffic)
    server.should_exit = True
    thread.join(timeout=10)
    telemetry.force_flush()
    drawn = render(
        console,
        capture.spans.get_finished_spans(),
        capture.logs.get_finished_logs(),
        capture.metrics.get_metrics_data(),
    )
    console.print(f"{drawn} request traces drawn (/healthz and /readyz are not traced).")
    draw_stalls(console, capture.logs.get_finished_logs())
    if online:
        console.print(
            "Grafana: http://127.0.0.1:3000/d/qm-otel-service (pick service qm-demo) — Explore: "
            'Loki {service_name="qm-demo"} | correlation_id="order-1001", Tempo search service.name=qm-demo; '
            "or `qm-otel logs order-1001`"
        )
    telemetry.shutdown()
    return 0 if drawn else 1
