"""The benchmark: qm-otel against a bare app, the stock distro, FastAPI's native telemetry and logfire.

One run, side by side, on this machine; prints every figure and ratio and writes
``docs/benchmarks.md``. Never a pass/fail: targets are labelled, nothing is asserted.

For each variant (the same FastAPI app, ``benchmarks/apps/``, one JSON route that writes one log
line; all signals over OTLP/HTTP to a sink on loopback, 100 % sampled):

- **HTTP under load**: one uvicorn worker, ``wrk -t1 -c8`` on loopback: requests/s, p50, p99; then
  the items the sink (``benchmarks/sink.py``, its own process) counted for those requests.
- **CPU per request, in-process**: the app driven by an ASGI driver at full speed
  (``benchmarks/inprocess.py``), process CPU time over all threads including the final flush, split
  into the main (request) thread, the export threads and threads that ended during the flush, and
  what the sink counted.
- **Start-up**: importing the app module (building the app, calling ``setup()``), wall time and
  peak RSS, against the bare app.
- **Log records/s** end to end (``benchmarks/logs.py``).

The run is ``--rounds`` interleaved rounds (3; ``--short``: 1): each round runs every variant once
(load, in-process, start-up), then every log variant once, each round in a rotated order
(``support.round_order``), so the machine's drift over the run falls on every variant alike. The
report gives each figure's median over the rounds with their range, and each ratio as the median of
the per-round ratios (the two variants of a ratio ran minutes apart, not a whole run apart).

Duration on the 2-core VM (measured with the defaults, one round of bare, qm-setup and qm-filelog):
about 45 s per variant and round (wrk for 10 s after a 2 s warm-up and 6.5 s for the warm-up's
batches, then the wait for the sink's counts; 8,000 requests in-process; 3 start-ups), 25 s for the
bare app, 15 s for the log variants: about 6 minutes a round with all 8 variants (logfire, the
slowest in-process, a little more), 19 minutes for the 3 rounds, plus 1.5 to 2 minutes of scale
notes: 20 to 23 minutes in all. ``--short`` (one round, 2 s under wrk, 300 requests in-process, 1 s
export intervals) takes under 2 minutes for three variants.

Run it with ``./scripts/bench`` (installs wrk, the stock distro and logfire in side environments
under ``.bench/``); ``--short`` is the setting CI runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import logs, report, scale, soak
from benchmarks.support import ROOT, Variant, free_port, round_order, wait_port

MAIN = Path(sys.executable).parent
SIDE = ROOT / ".bench"


STOCK_ENV = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
}
VARIANTS = (
    Variant("bare", "bare app", MAIN, "benchmarks.apps.bare", logs_per_request=0, exports=False),
    Variant("qm-setup", "qm-otel `setup()`", MAIN, "benchmarks.apps.qm_setup", logs_per_request=2),
    Variant("qm-instrument", "qm-otel `opentelemetry-instrument`", MAIN, "benchmarks.apps.plain", zero_code=True,
            logs_per_request=2),
    Variant("qm-nocode", "qm-otel `setup()`, code location off", MAIN, "benchmarks.apps.qm_setup", logs_per_request=2,
            env={"QM_OTEL_LOG_CODE_LOCATION": "false"}),
    # the same app and set-up without the event-loop watchdog (issue 25): its cost per request is the difference
    Variant("qm-nowatch", "qm-otel `setup()`, event-loop watchdog off", MAIN, "benchmarks.apps.qm_setup",
            logs_per_request=2, env={"QM_OTEL_EVENT_LOOP_WATCHDOG": "false"}),
    # the same app and set-up; log records go only to stdout (JSON lines) for a collector's filelog receiver
    Variant("qm-filelog", "qm-otel `setup()`, logs via the collector's filelog (OTLP log export off)", MAIN,
            "benchmarks.apps.qm_setup", logs_per_request=0, env={"OTEL_LOGS_EXPORTER": "none"},
            note="the JSON lines on stdout (written to a file here) are what a collector's filelog receiver "
                 "would read; no log record goes over OTLP"),
    # the stock distro exports the app's log line only at WARNING and above (root logger default): 0 per request
    Variant("stock", "stock `opentelemetry-distro`", SIDE / "stock" / "bin", "benchmarks.apps.plain", zero_code=True,
            env=STOCK_ENV, logs_per_request=0,
            note="the stock distro exports no INFO log lines (its handler sits under the root logger's default "
                 "WARNING level) and makes three spans per request (the server span and its internal send/receive "
                 "spans)"),
    Variant("native", "FastAPI native telemetry", MAIN, "benchmarks.apps.native"),
    Variant("logfire", "logfire", SIDE / "logfire" / "bin", "benchmarks.apps.logfire_app", logs_per_request=0,
            duration_points=False,
            note="logfire sends the app's log line as a span (its `spans in all` are 2 per request) and no "
                 "`http.server.request.duration` points"),
)


class Sink:
    """The OTLP sink process and its counters; how often the variants export to it (metrics, span batches)."""

    def __init__(self, interval_ms: int = 5000) -> None:
        self.interval_ms = interval_ms
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.sink", str(self.port)], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.endpoint + "/counts", timeout=10) as response:
            return dict(json.loads(response.read()))

    def reset(self) -> None:
        request = urllib.request.Request(self.endpoint + "/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def variant_env(variant: Variant, sink: Sink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QM_OTEL_", "UVICORN_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="bench",
        OTEL_METRIC_EXPORT_INTERVAL=str(sink.interval_ms),
        QM_OTEL_ENVIRONMENT="production",  # JSON lines on stdout, as in a container
        LOGFIRE_SEND_TO_LOGFIRE="false",
    )
    if sink.interval_ms != 5000:  # --short: quicker batches, so the waits for the sink are short (5 s: the default)
        env.update(OTEL_BSP_SCHEDULE_DELAY=str(sink.interval_ms))
    env.update(variant.env)
    return env


def command(variant: Variant, *args: str) -> list[str]:
    wrapped = [str(variant.bin_dir / "opentelemetry-instrument")] if variant.zero_code else []
    return [*wrapped, *args]


def settle(sink: Sink, expected: int, timeout_s: float, *, points: bool = True) -> dict[str, Any]:
    """Wait until the sink has the expected server spans (and duration points), or the timeout; its counts."""
    deadline = time.monotonic() + timeout_s
    counts = sink.counts()
    while time.monotonic() < deadline and (
            counts["server_spans"] < expected or (points and counts["duration_points"] < expected)):
        time.sleep(0.5)
        counts = sink.counts()
    time.sleep(1.0)  # the other signals' last batches
    return sink.counts()


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_TOTAL = re.compile(r"(\d+) requests in")
WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, seconds: float) -> dict[str, float]:
    duration = max(1, round(seconds))  # wrk takes whole seconds
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{duration}s", "--latency", url], capture_output=True,
                         text=True, check=True, timeout=seconds + 60).stdout
    rps = WRK_RPS.search(out)
    total = WRK_TOTAL.search(out)
    pct = {p: float(v) * UNITS[u] for p, v, u in WRK_PCT.findall(out)}
    if rps is None or total is None:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    return {"rps": float(rps.group(1)), "requests": float(total.group(1)), "p50_ms": pct.get("50", float("nan")),
            "p99_ms": pct.get("99", float("nan"))}


def http_load(variant: Variant, sink: Sink, seconds: float, workdir: Path) -> dict[str, Any]:
    port = free_port()
    log = (workdir / f"{variant.key}.stdout").open("wb")
    process = subprocess.Popen(
        command(variant, str(variant.bin_dir / "uvicorn"), f"{variant.module}:app", "--host", "127.0.0.1", "--port",
                str(port), "--no-access-log"),
        cwd=ROOT, env=variant_env(variant, sink), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, process)
        url = f"http://127.0.0.1:{port}/items/7"
        run_wrk(url, max(1.0, seconds / 4))  # warm-up
        time.sleep(sink.interval_ms * 1.3 / 1000)  # the warm-up's batches and metric points arrive before the count
        sink.reset()
        result = run_wrk(url, seconds)
        counts = settle(sink, int(result["requests"]) if variant.exports else 0, timeout_s=30,
                        points=variant.duration_points)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    return {**result, "sink": counts}


def inprocess(variant: Variant, sink: Sink, requests: int, workdir: Path) -> dict[str, Any]:
    sink.reset()
    out = workdir / f"{variant.key}.inprocess"
    with out.open("wb") as stdout:
        done = subprocess.run(command(variant, str(variant.bin_dir / "python"), "-m", "benchmarks.inprocess",
                                      variant.module, "--requests", str(requests), "--warmup", "200"),
                              cwd=ROOT, env=variant_env(variant, sink), stdout=stdout, stderr=subprocess.STDOUT,
                              check=False, timeout=900)
    text = out.read_text(encoding="utf-8", errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"{variant.key} in-process exited with {done.returncode}:\n{text[-3000:]}")
    line = next(line for line in text.splitlines() if line.startswith("INPROCESS-RESULT "))
    result = dict(json.loads(line.split(" ", 1)[1]))
    result["sink"] = settle(sink, requests + 200 if variant.exports else 0, timeout_s=10,
                            points=variant.duration_points)
    return result


#: the import's time and the process's peak RSS in kB: VmHWM (this process image's own high-water mark;
#: ``ru_maxrss`` would carry over the parent's peak through ``vfork`` + ``exec``), else ``ru_maxrss``
STARTUP = ("import resource, time; t = time.perf_counter(); import {module}; elapsed = time.perf_counter() - t\n"
           "try:\n"
           "    peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
           "except (OSError, StopIteration):\n"
           "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
           "print(elapsed, peak)")


def startup(variant: Variant, sink: Sink, runs: int) -> dict[str, float]:
    """Import the app module (app built, telemetry set up): seconds and peak RSS, medians over ``runs``.

    Under ``opentelemetry-instrument`` the wrapper's set-up runs before the timed import (in its
    sitecustomize), so for those variants only the peak RSS compares.
    """
    imports, rss = [], []
    for _ in range(runs):
        out = subprocess.run(command(variant, str(variant.bin_dir / "python"), "-c",
                                     STARTUP.format(module=variant.module)),
                             cwd=ROOT, env=variant_env(variant, sink), capture_output=True, text=True, check=True,
                             timeout=120)
        seconds, peak_kb = out.stdout.strip().splitlines()[-1].split()
        imports.append(float(seconds))
        rss.append(float(peak_kb) / 1024)
    return {"import_s": statistics.median(imports), "rss_mb": statistics.median(rss)}


def machine() -> dict[str, str]:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else model
    packages = ["opentelemetry-sdk", "opentelemetry-instrumentation-fastapi", "fastapi", "uvicorn", "qm-otel"]
    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except Exception:
            versions[name] = "?"
    logfire_python = SIDE / "logfire" / "bin" / "python"
    if logfire_python.exists():
        versions["logfire"] = subprocess.run([str(logfire_python), "-c", "import logfire; print(logfire.VERSION)"],
                                             capture_output=True, text=True, check=False).stdout.strip() or "?"
    return {
        "cpu": f"{model}, {os.cpu_count()} cores",
        "os": platform.platform(),
        "python": platform.python_version(),
        "wrk": (shutil.which("wrk") and "wrk -t1 -c8") or "missing",
        **versions,
    }


def measure(variant: Variant, sink: Sink, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One round's figures of one variant: under load, in-process, start-up."""
    return {
        "http": http_load(variant, sink, args.seconds, workdir),
        "inprocess": inprocess(variant, sink, args.requests, workdir),
        "startup": startup(variant, sink, args.startup_runs),
    }


def summary(figures: dict[str, Any]) -> str:
    """One progress line for a variant's round."""
    h, r, s = figures["http"], figures["inprocess"], figures["startup"]
    return (f"{h['rps']:,.0f} req/s, p99 {h['p99_ms']:.1f} ms; {r['cpu_us_per_request']:,.0f} µs/request "
            f"(main {r['main_thread_us_per_request']:,.0f}, export threads {r['export_threads_us_per_request']:,.0f}, "
            f"ended {r['ended_threads_us_per_request']:,.0f}); import {s['import_s']:.3f} s, {s['rss_mb']:.1f} MB")


def run_rounds(variants: list[Variant], sink: Sink, args: argparse.Namespace,
               workdir: Path) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, float]]]:
    """Every variant, then every log variant, once a round, each round in a rotated order.

    The figures by variant, a list in round order; the log records/s by log variant, one dict a round.
    """
    results: dict[str, list[dict[str, Any]]] = {v.key: [] for v in variants}
    log_rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        for variant in round_order(variants, index, args.rounds):
            print(f"== round {index + 1}/{args.rounds}: {variant.label}", flush=True)
            started = time.monotonic()
            results[variant.key].append(measure(variant, sink, args, workdir))
            print(f"   {summary(results[variant.key][-1])} [{time.monotonic() - started:.0f} s]", flush=True)
        started = time.monotonic()
        log_rounds.append(logs.run_round(args.log_records, sink.endpoint,
                                         round_order(logs.VARIANTS, index, args.rounds)))
        print(f"   logs [{time.monotonic() - started:.0f} s]", flush=True)
    return results, log_rounds


def write(text: str, out: str) -> None:
    """The report to ``out``, keeping the soak sections there (``./scripts/soak`` writes them)."""
    previous = Path(out).read_text(encoding="utf-8") if Path(out).exists() else ""
    kept = soak.soak_sections(previous)
    Path(out).write_text(text.rstrip("\n") + ("\n\n" + kept + "\n" if kept else "\n"), encoding="utf-8")
    print(f"wrote {out}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="one round, a few seconds per figure (CI checks that it runs)")
    parser.add_argument("--variants", default=",".join(v.key for v in VARIANTS))
    parser.add_argument("--rounds", type=int, help="interleaved rounds; each figure is their median (default 3)")
    parser.add_argument("--seconds", type=float, help="wrk duration per variant and round (default 10)")
    parser.add_argument("--requests", type=int,
                        help="in-process requests per variant and round (default 8,000: well beyond the export "
                             "queues, so a drop shows)")
    parser.add_argument("--startup-runs", type=int, help="start-ups per variant and round (default 3)")
    parser.add_argument("--log-records", type=int, help="records per log variant and round (default 30,000)")
    parser.add_argument("--no-scale", action="store_true", help="leave out the scale notes")
    parser.add_argument("--out", help="where to write the report; '-' for nowhere (default: docs/benchmarks.md, "
                                      "nowhere with --short)")
    args = parser.parse_args()
    defaults = {"rounds": 1, "seconds": 2.0, "requests": 300, "startup_runs": 1, "log_records": 2000} if args.short \
        else {"rounds": 3, "seconds": 10.0, "requests": 8000, "startup_runs": 3, "log_records": 30000}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = "-" if args.short else str(ROOT / "docs" / "benchmarks.md")
    return args


def main() -> None:
    args = arguments()
    started = time.monotonic()
    wanted = args.variants.split(",")
    variants = [v for v in VARIANTS if v.key in wanted and v.available()]
    skipped = [v.key for v in VARIANTS if v.key in wanted and not v.available()]
    sink = Sink(interval_ms=1000 if args.short else 5000)
    try:
        with tempfile.TemporaryDirectory(prefix="qm-bench-") as tmp:
            results, log_rounds = run_rounds(variants, sink, args, Path(tmp))
            scale_results = None if args.no_scale else scale.run_all(300 if args.short else 1500, sink.endpoint)
    finally:
        sink.stop()
    run = report.Run(variants, results, log_rounds, machine(), skipped, short=args.short,
                     minutes=(time.monotonic() - started) / 60)
    text = report.render(run)
    if scale_results is not None:
        bare = results.get("bare")
        bare_cpu = statistics.median(r["inprocess"]["cpu_us_per_request"] for r in bare) if bare else None
        text += "\n" + "\n".join(scale.render(scale_results, bare_cpu)) + "\n"
    print(text)
    print(f"took {(time.monotonic() - started) / 60:.1f} minutes", flush=True)
    if args.out != "-":
        write(text, args.out)


if __name__ == "__main__":
    main()
