"""The benchmark command runs (on its short setting): every table, every item counted at the sink.

Speed is never asserted here; what is checked is that the harness measures and counts, and that
qm-otel's telemetry for every request reaches the sink (nothing bought by dropping).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import service as svc


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by scripts/install test")
def test_the_short_benchmark_runs_and_counts_everything(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--short", "--variants", "bare,qm-setup,qm-instrument",
         "--out", str(out)],
        cwd=svc.ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    for heading in ("## HTTP under load", "## CPU per request, in-process", "## Start-up", "## Log records/s",
                    "## Targets (issue 11)"):
        assert heading in report
    rows = [line for line in report.splitlines() if line.startswith("| qm-otel `setup()`")]
    assert len(rows) == 3  # load, CPU, start-up
    load, cpu = rows[0], rows[1]
    assert "server spans" in load
    assert "short by" not in cpu, cpu  # in-process at full speed, every span, record and point arrived
    assert "500/500 server spans" in cpu
    assert "1,000/1,000 logs" in cpu
    for name in ("pjl-json", "qm-json", "qm-text", "qm-pipe", "qm-json+otlp"):
        assert f"| {name} |" in report
