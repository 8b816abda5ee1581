"""A real PostgreSQL server (Debian's), started for the tests in a temporary directory on 127.0.0.1."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.service import free_port


def _bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (the ``postgresql`` Debian package)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        message = "PostgreSQL is not installed (scripts/install test installs the Debian package postgresql)"
        raise AssertionError(message)
    return Path(found[-1]).parent


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user the Debian package creates."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throw-away cluster; yield its SQLAlchemy URL (psycopg 3, user postgres, trust auth)."""
    bin_dir = _bin_dir()
    data = Path(tempfile.mkdtemp(prefix="qm-otel-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8"]), check=True, capture_output=True, timeout=120)
    options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off"
    subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l",
                              str(data / "log"), "-w", "-t", "60", "start"]), check=True, capture_output=True,
                   timeout=120)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError((data / "log").read_text(errors="replace"))
            time.sleep(0.1)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]),
                       capture_output=True, check=False, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
