"""Start a real uvicorn process serving a test app, on 127.0.0.1, by either launch path.

The one way to run a service in a test is a ``with`` block, which stops it whatever happens inside::

    with svc.start(app, svc.base_env(receiver.endpoint), zero_code=zero_code) as service:
        assert service.get("/work/1").status_code == 200

Leaving the block sends SIGTERM, kills the process if it has not exited within its bound, and keeps
what it printed (``service.lines``, ``service.stderr_text``); when the block ends by an exception
(a failed ``assert`` too), the tail of that output is written to stderr, where pytest shows it beside
the failure. ``service.terminate()`` inside the block stops it earlier (to read the exit status or
the output); leaving the block then does nothing more. A fixture yields inside the same block.
"""

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
from types import TracebackType
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
#: how much of a service's output a failed ``with`` block shows
STDOUT_TAIL, STDERR_TAIL = 60, 40


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
    #: how long leaving the ``with`` block waits after SIGTERM before it kills the process
    stop_timeout_s: float = 60

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Service:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Stop it (SIGTERM, then SIGKILL after the bound); on an exception, show what it printed."""
        try:
            self.terminate(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            if error is None:
                raise  # killed: it did not stop on SIGTERM within the bound, a failure of its own
        if error is not None:
            tail = "\n".join(self.lines[-STDOUT_TAIL:])
            errors = "\n".join(self.stderr_text.splitlines()[-STDERR_TAIL:])
            sys.stderr.write(f"--- {self.process.args!r} exited {self.process.returncode}\n"
                             f"--- stdout (last {STDOUT_TAIL} lines)\n{tail}\n"
                             f"--- stderr (last {STDERR_TAIL} lines)\n{errors}\n")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM, wait ``timeout_s`` for the exit (then SIGKILL and raise), and keep what it printed.

        Calling it again returns the same exit status.
        """
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
    """Serve ``app`` (an import string) with uvicorn, optionally under ``opentelemetry-instrument``.

    Use it as ``with start(...) as service:``: the block stops the service whatever happens in it.
    """
    port = free_port()
    command = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if zero_code:
        command = [str(BIN / "opentelemetry-instrument"), *command]
    return launch(command, port, env)


def launch(command: list[str], port: int, env: dict[str, str], *, cwd: Path = ROOT) -> Service:
    """Run ``command`` (a server that will listen on 127.0.0.1:``port``) in ``cwd`` and wait until it listens.

    Use it as ``with launch(...) as service:`` (see the module's docstring), as :func:`start`.
    """
    stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Service.terminate()
    stderr = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
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
