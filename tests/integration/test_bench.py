"""The benchmark command runs (on its short setting): every table, every item counted at the sink.

Speed is never asserted here; what is checked is that the harness measures and counts, and that
qm-otel's telemetry for every request reaches the sink (nothing bought by dropping). The report's
arithmetic over several rounds (medians, ranges, per-round ratios, shortfalls) is checked on made-up
figures, without running anything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks import bench, report
from benchmarks.support import round_order

from tests.support import service as svc

TARGETS = 9
X, DASH = "\N{MULTIPLICATION SIGN}", "\N{EN DASH}"  # as the report writes them


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split("|")]


def _number(cell: str) -> float:
    return float(cell.split(" ", maxsplit=1)[0].replace(",", "").replace(X, ""))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by scripts/install test")
def test_the_short_benchmark_runs_and_counts_everything(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--short", "--variants", "bare,qm-setup,qm-filelog",
         "--out", str(out)],
        cwd=svc.ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== round 1/1: qm-otel `setup()`" in result.stdout
    report_text = out.read_text(encoding="utf-8")
    assert "one round" in report_text
    for heading in ("## HTTP under load", "## CPU per request, in-process", "## Start-up", "## Log records/s",
                    "## Targets (issue 21)"):
        assert heading in report_text
    assert "Targets (issue 11)" not in report_text
    rows = [line for line in report_text.splitlines() if line.startswith("| qm-otel `setup()` |")]
    assert len(rows) == 3  # load, CPU, start-up
    load, cpu = rows[0], rows[1]
    assert "server spans" in load
    assert "short by" not in cpu, cpu  # in-process at full speed, every span, record and point arrived
    assert "500/500 server spans" in cpu
    assert "1,000/1,000 logs" in cpu
    # per thread: main + export threads + ended threads make up the total (each rounded to 1 µs)
    header = next(line for line in report_text.splitlines() if line.startswith("| variant | CPU µs/request"))
    assert _cells(header)[4:7] == ["main thread µs", "export threads µs", "ended threads µs"]
    total, main, export, ended = (_number(_cells(cpu)[i]) for i in (1, 4, 5, 6))
    assert main > 0
    assert abs(main + export + ended - total) <= 2, cpu
    # the filelog variant: spans and points over OTLP, no log record
    filelog = [line for line in report_text.splitlines() if line.startswith("| qm-otel `setup()`, logs via the "
                                                                            "collector's filelog")]
    assert len(filelog) == 3
    assert "500/500 server spans" in filelog[1]
    assert "; 0 logs;" in filelog[1]
    assert "short by" not in filelog[1], filelog[1]
    for name in ("pjl-json", "qm-json", "qm-text", "qm-pipe", "qm-json+otlp"):
        assert f"| {name} |" in report_text
    targets = report_text.split("## Targets (issue 21)")[1].split("\n## ")[0]
    verdicts = [_cells(line)[-1] for line in targets.splitlines() if line.startswith("| ") and "verdict" not in line]
    assert len(verdicts) == TARGETS
    assert verdicts.count("not measured") == 2  # the stock distro and logfire were not run
    assert all(v in {"met", "**missed**", "not measured"} for v in verdicts)


def _round(rps: float, p99: float, cpu: float, import_s: float, *, short: int = 0) -> dict[str, Any]:
    sink = {"server_spans": 100 - short, "spans": 100 - short, "logs": {"app": 100, "qm_otel.requests": 100},
            "duration_points": 100}
    threads = {"main_thread_us_per_request": cpu * 0.7, "export_threads_us_per_request": cpu * 0.2,
               "ended_threads_us_per_request": cpu * 0.1, "threads_us_per_request": {"OtelBatchSpan": cpu * 0.2}}
    return {
        "http": {"rps": rps, "requests": 100.0, "p50_ms": p99 / 4, "p99_ms": p99, "sink": sink},
        "inprocess": {"cpu_us_per_request": cpu, "requests": 80, "warmup": 20, "sink": sink, **threads},
        "startup": {"import_s": import_s, "rss_mb": 50.0},
    }


def test_the_report_takes_medians_over_rounds_and_ratios_within_them() -> None:
    variants = [v for v in bench.VARIANTS if v.key in {"bare", "qm-setup"}]
    # the machine slows down over the rounds: each round's ratio is 0.5, the ratio of the medians is not
    results = {
        "bare": [_round(1000, 10, 100, 0.5), _round(600, 12, 150, 0.6), _round(400, 14, 200, 0.7)],
        "qm-setup": [_round(500, 20, 300, 0.6), _round(300, 30, 450, 0.8), _round(200, 28, 600, 0.9, short=3)],
    }
    logs = [{"pjl-json": 100.0, "qm-json": 250.0, "qm-json+otlp": 90.0},
            {"pjl-json": 50.0, "qm-json": 120.0, "qm-json+otlp": 60.0},
            {"pjl-json": 80.0, "qm-json": 150.0, "qm-json+otlp": 85.0}]
    run = report.Run(variants, results, logs, {"cpu": "test"}, ["stock", "logfire"], short=False, minutes=1.0)
    text = report.render(run)
    assert "3 interleaved rounds" in text
    http = next(line for line in text.splitlines() if line.startswith("| qm-otel `setup()` |"))
    assert _cells(http)[1] == f"300 (200{DASH}500)"
    assert _cells(http)[2] == f"0.50{X}"
    assert "300/300 server spans" not in http  # 3 spans short in the third round, named
    assert "**short by 3** (round 3)" in http
    cpu = [line for line in text.splitlines() if line.startswith("| qm-otel `setup()` |")][1]
    assert _cells(cpu)[2] == f"3.00{X}"
    assert "- qm-otel `setup()`: `OtelBatchSpan` 90" in text
    targets_section = text.split("## Targets")[1].split("\n## ")[0]  # up to the next section's heading
    rows = {_cells(line)[0]: _cells(line)[1:] for line in targets_section.splitlines()
            if line.startswith("| ") and "verdict" not in line}
    assert rows[f"requests/s ≥ 0.55{X} bare"] == [f"0.50{X}", f"0.50{X}, 0.50{X}, 0.50{X}", "**missed**"]
    assert rows[f"requests/s ≥ 2{X} the stock distro"][-1] == "not measured"
    assert rows[f"JSON log call end to end ≥ 2{X} python-json-logger (qm-json)"][::2] == [f"2.40{X}", "met"]
    assert rows["start-up ≤ +150 ms over bare"][::2] == ["+200 ms", "**missed**"]
    assert rows["start-up ≤ +15 MB RSS over bare"][::2] == ["+0.0 MB", "met"]
    assert len(rows) == TARGETS
    assert re.search(rf"\| bare app \| 600 \(400{DASH}1,000\) \|", text)


@pytest.mark.parametrize(("nowatch_rps", "verdict"), [((505, 478, 492), "within the run-to-run noise"),
                                                       ((600, 580, 590), "**beyond the run-to-run noise**")])
def test_the_watchdog_section_sets_its_cost_against_the_rounds_spread(nowatch_rps: tuple[int, ...],
                                                                      verdict: str) -> None:
    variants = [v for v in bench.VARIANTS if v.key in {"bare", "qm-setup", "qm-nowatch"}]
    setup = [_round(500, 20, 300, 0.6), _round(480, 30, 450, 0.8), _round(490, 28, 600, 0.9)]
    results = {"bare": setup, "qm-setup": setup,
               "qm-nowatch": [_round(r, 20, c, 0.6) for r, c in zip(nowatch_rps, (298, 447, 590), strict=True)]}
    run = report.Run(variants, results, [], {"cpu": "test"}, [], short=False, minutes=1.0)
    section = report.render(run).split("## The event-loop watchdog's cost")[1].split("\n## ")[0]
    assert verdict in section
    assert "+2, +3, +10" in section  # CPU on - off, round by round
    # without the watchdog-off variant there is no section
    alone = report.Run(variants[:2], {k: results[k] for k in ("bare", "qm-setup")}, [], {}, [], short=False,
                       minutes=1.0)
    assert "watchdog" not in report.render(alone)


def test_each_round_starts_elsewhere() -> None:
    keys = [v.key for v in bench.VARIANTS]
    orders = [round_order(keys, index, 3) for index in range(3)]
    assert all(sorted(order) == sorted(keys) for order in orders)
    assert len({order[0] for order in orders}) == 3
    assert len({order[-1] for order in orders}) == 3
    assert "qm-filelog" in keys
