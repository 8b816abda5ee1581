"""The interpreter's switch interval while the exporters run: shortened, restored, never over the app's own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

SCRIPT = """
import json, sys
if sys.argv[1] != "default":
    sys.setswitchinterval(float(sys.argv[1]))
import qm_otel
before = sys.getswitchinterval()
qm_otel.setup(log_format="none")
during = sys.getswitchinterval()
qm_otel.shutdown()
print(json.dumps([before, during, sys.getswitchinterval()]))
"""


def intervals(receiver: OtlpReceiver, app_interval: str, **env: str) -> list[float]:
    """Before setup, while set up, after shutdown (a receiver that answers, so shutdown is quick)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), app_interval],
                            env=svc.base_env(receiver.endpoint, **env), capture_output=True, text=True,
                            timeout=60, check=False, cwd=svc.ROOT)
    assert result.returncode == 0, result.stderr
    return [round(v, 6) for v in json.loads(result.stdout.strip().splitlines()[-1])]


def test_the_interval_is_shortened_while_exporting_and_restored_at_shutdown(receiver: OtlpReceiver) -> None:
    assert intervals(receiver, "default") == [0.005, 0.0005, 0.005]


def test_an_explicit_interval_is_applied(receiver: OtlpReceiver) -> None:
    assert intervals(receiver, "default", QM_OTEL_SWITCH_INTERVAL_MS="2") == [0.005, 0.002, 0.005]


def test_off_and_no_exporters_leave_the_interpreter_alone(receiver: OtlpReceiver) -> None:
    assert intervals(receiver, "default", QM_OTEL_SWITCH_INTERVAL_MS="off") == [0.005, 0.005, 0.005]
    no_exporters = {"OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    assert intervals(receiver, "default", **no_exporters) == [0.005, 0.005, 0.005]


def test_an_interval_the_application_chose_is_kept_unless_the_setting_is_explicit(receiver: OtlpReceiver) -> None:
    assert intervals(receiver, "0.01") == [0.01, 0.01, 0.01]
    assert intervals(receiver, "0.01", QM_OTEL_SWITCH_INTERVAL_MS="1") == [0.01, 0.001, 0.01]


@pytest.mark.parametrize("bad", ["0", "0.01", "101", "fast", "-1"])
def test_a_bad_interval_fails_setup_naming_the_setting(bad: str) -> None:
    result = subprocess.run([sys.executable, "-c", "import qm_otel; qm_otel.setup(log_format='none')"],
                            env=svc.base_env("http://127.0.0.1:9", QM_OTEL_SWITCH_INTERVAL_MS=bad),
                            capture_output=True, text=True, timeout=60, check=False, cwd=svc.ROOT)
    assert result.returncode != 0
    assert "switch_interval_ms" in result.stderr
    assert repr(bad) in result.stderr
    assert "0.05 to 100" in result.stderr
