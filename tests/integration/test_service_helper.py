"""The tests' one way to run a service (tests/support/service.py): stopped and its output kept whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import service as svc

#: a server that prints a line, accepts connections, and (with "ignore") ignores SIGTERM
SERVER = """
import signal, socket, sys
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
print("listening", flush=True)
print("on stderr", file=sys.stderr, flush=True)
while True:
    server.accept()[0].close()
"""


def launched(sigterm: str, stop_timeout_s: float = 60) -> svc.Service:
    port = svc.free_port()
    service = svc.launch([sys.executable, "-c", SERVER, str(port), sigterm], port, dict(os.environ))
    service.stop_timeout_s = stop_timeout_s
    return service


def test_a_failing_block_stops_the_service_and_shows_what_it_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AssertionError, match="the test failed"), launched("default") as service:
        raise AssertionError("the test failed")
    assert service.process.returncode == -signal.SIGTERM
    assert service.lines == ["listening"]
    assert service.stderr_text == "on stderr\n"
    shown = capsys.readouterr().err
    assert "exited -15" in shown
    assert "listening" in shown
    assert "on stderr" in shown


def test_a_service_that_ignores_sigterm_is_killed_after_the_bound() -> None:
    with pytest.raises(AssertionError, match="the test failed"), launched("ignore", 1) as service:
        raise AssertionError("the test failed")  # the failure is what is reported, not the timeout
    assert service.process.returncode == -signal.SIGKILL
    with pytest.raises(subprocess.TimeoutExpired), launched("ignore", 1) as service:
        assert service.process.poll() is None  # a block that succeeds: not stopping in time is the failure
    assert service.process.returncode == -signal.SIGKILL


def test_terminate_inside_the_block_gives_the_exit_status_and_leaving_does_nothing_more() -> None:
    with launched("default") as service:
        code = service.terminate()
        assert service.output() == "listening"
    assert code == service.terminate() == -signal.SIGTERM
    assert service.lines == ["listening"]
