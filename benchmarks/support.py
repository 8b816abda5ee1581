"""What the benchmark modules share: the repository root, a variant's description, ports, interleaving.

Imported by ``bench``, ``report`` and ``soak``, and importing none of them (no import cycle).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@dataclass(frozen=True)
class Variant:
    """One way of running the app: which environment, which module, whether under the wrapper."""

    key: str
    label: str
    bin_dir: Path
    module: str
    zero_code: bool = False
    env: dict[str, str] = field(default_factory=dict)
    #: log records the sink should get per request (the app's line, qm-otel's request log)
    logs_per_request: int = 1
    #: whether the variant exports ``http.server.request.duration`` (logfire does not)
    duration_points: bool = True
    #: whether it exports anything at all (the bare app does not: nothing to wait for at the sink)
    exports: bool = True
    #: a note for the report
    note: str = ""

    def available(self) -> bool:
        return (self.bin_dir / "python").exists()


def round_order(items: Sequence[T], round_index: int, rounds: int) -> list[T]:
    """``items`` rotated for round ``round_index`` of ``rounds``: the starts spread evenly over the list.

    With 8 items and 3 rounds the rounds start at items 0, 2 and 5, so no item always runs first or
    last and each runs early, midway and late once.
    """
    if not items:
        return []
    shift = (round_index * len(items)) // max(1, rounds)
    return [*items[shift:], *items[:shift]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port}")
