"""Start a real uvicorn process serving a test app, on 127.0.0.1, by either launch path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: the two launch paths: the app to serve and whether it runs under ``opentelemetry-instrument``
LAUNCHES = {
    "setup": ("tests.integration.apps.with_setup:app", False),
    "opentelemetry-instrument": ("tests.integration.apps.plain:app", True),
}
#: the same two launch paths for the correlation app
CORRELATED = {
    "setup": ("tests.integration.apps.correlated_setup:app", False),
    "opentelemetry-instrument": ("tests.integration.apps.correlated:app", True),
}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def packages_dir(target: Path, *requirements: str) -> str:
    """``requirements`` installed (without dependencies) into ``target``, to put first on ``PYTHONPATH``."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", str(target), *requirements], check=True, capture_output=True, timeout=600)
    return str(target)


def registering_distribution(root: Path, distribution: str, group: str, name: str, target: str) -> str:
    """A directory holding a distribution that registers ``name = target`` under entry-point ``group``.

    Put it first on a service's ``PYTHONPATH``: ``importlib.metadata`` then finds the entry point.
    """
    info = root / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    return str(root)


def base_env(endpoint: str, **extra: str) -> dict[str, str]:
    """A clean environment: no inherited OTEL_/QM_OTEL_ settings, fast export, JSON stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QM_OTEL_", "UVICORN_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="itest",
        QM_OTEL_SERVICE_VERSION="1.2.3",
        QM_OTEL_ENVIRONMENT="test",
        QM_OTEL_LOG_FORMAT="json",
        QM_OTEL_METRIC_EXPORT_INTERVAL="300",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_BLRP_SCHEDULE_DELAY="100",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Service:
    """A uvicorn subprocess; its stdout and stderr go to files read after it stops."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: IO[bytes]
    stderr: IO[bytes]
    lines: list[str] = field(default_factory=list)
    stderr_text: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM, wait for the exit, and keep what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.lines = self.output().splitlines()
            self.stderr_text = self.errors()
            self.stdout.close()
            self.stderr.close()
        return code

    def output(self) -> str:
        if self.stdout.closed:
            return "\n".join(self.lines)
        self.stdout.seek(0)
        return self.stdout.read().decode("utf-8", "replace")

    def errors(self) -> str:
        if self.stderr.closed:
            return self.stderr_text
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")


def start(app: str, env: dict[str, str], *, zero_code: bool = False, extra_args: tuple[str, ...] = ()) -> Service:
    """Serve ``app`` (an import string) with uvicorn, optionally under ``opentelemetry-instrument``."""
    port = free_port()
    command = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if zero_code:
        command = [str(BIN / "opentelemetry-instrument"), *command]
    return launch(command, port, env)


def launch(command: list[str], port: int, env: dict[str, str]) -> Service:
    """Run ``command`` (a server that will listen on ``port``) and wait until it listens."""
    stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Service.terminate()
    stderr = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    service = Service(process, port, stdout, stderr)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            service.terminate()
            raise AssertionError(f"service exited with {process.returncode}:\n{service.errors()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return service
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                service.terminate()
                raise AssertionError(f"service did not listen on {port}:\n{service.errors()}") from None
            time.sleep(0.05)
