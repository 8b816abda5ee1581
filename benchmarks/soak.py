"""Soak: steady load for minutes while the collector goes down and comes back (issue 12, item 7).

``./scripts/soak [--minutes 10] [--rate 200] [--period 30]`` serves the benchmark app with qm-otel
(``setup()``, all signals over OTLP/HTTP) under uvicorn, sends ``--rate`` requests per second over
eight kept-alive connections, and stops the sink (connections refused) and starts it again every
``--period`` seconds. It records the app's RSS over time, requests that failed, and what arrived:
spans, log records and the service's own ``qm_otel.telemetry.retried`` / ``.dropped`` counters.
After the last outage the sink stays up until everything has arrived (or a minute passes), then
the app gets SIGTERM. The results replace the soak section of ``docs/benchmarks.md`` (``--out -``
prints them only). Not a test: a figure to read, with a verdict on "no request failed, nothing lost".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.support import ROOT, free_port, wait_port


def markers(period: float) -> tuple[str, str]:
    """The soak section's markers in ``docs/benchmarks.md``: one section per outage period."""
    return f"<!-- soak:{period:g}s:start -->", f"<!-- soak:{period:g}s:end -->"


class Sink:
    """The benchmark sink on a fixed port, stopped and started; counts summed over its lives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.totals: Counter[str] = Counter()
        self.telemetry: dict[str, float] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.sink", str(self.port)], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process)

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.endpoint + "/counts", timeout=10) as response:
            return dict(json.loads(response.read()))

    def current(self) -> Counter[str]:
        """This life's counts plus the earlier lives'."""
        now = self.counts()
        self.telemetry.update({k: max(v, self.telemetry.get(k, 0.0)) for k, v in now["telemetry"].items()})
        return self.totals + Counter({"server_spans": now["server_spans"], "log_records": now["log_records"]})

    def stop(self) -> None:
        assert self.process is not None
        self.totals = self.current()
        self.process.terminate()
        self.process.wait(timeout=30)
        self.process = None


class Load:
    """Requests at a steady rate over kept-alive connections; counts and latencies."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.rate = port, rate
        self.sent = self.ok = self.failed = 0
        self.latencies: list[float] = []

    async def connection(self, index: int, connections: int, start: float, until: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        n = index
        while True:
            due = start + n / self.rate
            if due >= until:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            n += connections
            self.sent += 1
            began = time.monotonic()
            try:
                writer.write(b"GET /items/7 HTTP/1.1\r\nHost: soak\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                ok = head.startswith(b"HTTP/1.1 200")
            except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration):
                ok = False
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.ok += ok
            self.failed += not ok
            self.latencies.append(time.monotonic() - began)
        writer.close()

    async def run(self, seconds: float, connections: int = 8) -> None:
        start = time.monotonic()
        await asyncio.gather(*(self.connection(i, connections, start, start + seconds) for i in range(connections)))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(args: argparse.Namespace, sink: Sink, app: subprocess.Popen[bytes], port: int) -> dict[str, Any]:
    load = Load(port, args.rate)
    seconds = args.minutes * 60
    rss: list[tuple[float, float]] = []
    outages = 0

    async def cycle() -> None:
        nonlocal outages
        started = time.monotonic()
        while time.monotonic() - started < seconds - args.period:
            await asyncio.sleep(args.period)
            if sink.process is not None:
                sink.stop()
                outages += 1
            else:
                sink.start()

    async def sample() -> None:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            rss.append((time.monotonic() - started, rss_mb(app.pid)))
            await asyncio.sleep(10)

    await asyncio.gather(load.run(seconds), cycle(), sample())
    if sink.process is None:
        sink.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and sink.current()["server_spans"] < load.sent:
        await asyncio.sleep(1)
    rss.append((seconds, rss_mb(app.pid)))
    return {"load": load, "rss": rss, "outages": outages}


def report(args: argparse.Namespace, result: dict[str, Any], totals: Counter[str], telemetry: dict[str, float],
           stdout: str) -> str:
    load: Load = result["load"]
    rss: list[tuple[float, float]] = result["rss"]
    latencies = sorted(load.latencies) or [float("nan")]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    expected_logs = 2 * load.sent
    dropped = {k: v for k, v in telemetry.items() if k.startswith("dropped:")}
    retried = {k.split(":")[1]: v for k, v in telemetry.items() if k.startswith("retried:")}
    failing = sum("is failing" in line for line in stdout.splitlines())
    recovered = sum("recovered after" in line for line in stdout.splitlines())
    per_minute = [f"{mb:.0f}" for t, mb in rss if int(t) % 60 < 10 or t == rss[-1][0]]
    lost_spans = max(0, load.sent - totals["server_spans"])
    lost_logs = max(0, expected_logs - totals["log_records"])
    verdict = "held" if load.failed == 0 and lost_spans == 0 and lost_logs == 0 else "**not held**"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    start, end = markers(args.period)
    lines = [
        start,
        f"## Soak: steady load, the collector down for {args.period:g} s every {2 * args.period:g} s (issue 12)",
        "",
        f"Written by `./scripts/soak` on {when}: {args.minutes:g} minutes at {args.rate:g} requests/s "
        f"(8 kept-alive connections) against the benchmark app with `qm_otel.setup()`, the sink stopped "
        f"(connections refused) and started again every {args.period:g} s: {result['outages']} outages of "
        f"{args.period:g} s. Default buffer: {os.environ.get('QM_OTEL_EXPORT_BUFFER_ITEMS', '50,000')} items / "
        f"{os.environ.get('QM_OTEL_EXPORT_BUFFER_MB', '16')} MiB per signal.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests sent / failed | {load.sent:,} / {load.failed:,} |",
        f"| p99 latency | {p99:.1f} ms |",
        f"| server spans received | {totals['server_spans']:,} of {load.sent:,} |",
        f"| log records received | {totals['log_records']:,} of {expected_logs:,} (request log and app line; "
        "beyond that, qm-otel's own records) |",
        f"| items retried (delivered after a failed attempt) | "
        f"{', '.join(f'{s} {v:,.0f}' for s, v in sorted(retried.items())) or '0'} |",
        f"| items dropped | {', '.join(f'{k[8:]} {v:,.0f}' for k, v in sorted(dropped.items())) or '0'} |",
        f"| export warnings / recoveries logged | {failing} / {recovered} |",
        f"| RSS MB, about once a minute | {' → '.join(per_minute)} |",
        "",
        f"Verdict: no request failed and nothing was lost — {verdict}.",
        end,
    ]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """``text`` with the soak section of the same markers replaced by ``section`` (appended when new)."""
    start, end = section.splitlines()[0], section.splitlines()[-1]
    if start in text and end in text:
        return text[: text.index(start)] + section + text[text.index(end) + len(end):]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def soak_sections(text: str) -> str:
    """Every soak section in ``text`` (the benchmark report keeps them when it rewrites the file)."""
    sections = []
    while "<!-- soak:" in text:
        start = text.index("<!-- soak:")
        end_marker = text[start:].split(" ", 2)[1].replace(":start", ":end")
        stop = text.find(f"<!-- {end_marker} -->", start)
        if stop < 0:
            break
        stop += len(f"<!-- {end_marker} -->")
        sections.append(text[start:stop])
        text = text[stop:]
    return "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--period", type=float, default=30.0, help="seconds between collector stops and starts")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="'-' to print only")
    args = parser.parse_args()
    sink = Sink()
    sink.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QM_OTEL_", "UVICORN_"))}
    env.update(PYTHONPATH=str(ROOT), OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, OTEL_SERVICE_NAME="soak",
               QM_OTEL_ENVIRONMENT="production", OTEL_METRIC_EXPORT_INTERVAL="5000")
    stdout_path = ROOT / ".bench" / "soak.stdout"
    stdout_path.parent.mkdir(exist_ok=True)
    with stdout_path.open("wb") as stdout:
        app = subprocess.Popen([str(Path(sys.executable).with_name("uvicorn")), "benchmarks.apps.qm_setup:app",
                                "--port", str(port), "--no-access-log"], cwd=ROOT, env=env, stdout=stdout,
                               stderr=subprocess.STDOUT)
        try:
            wait_port(port, app)
            result = asyncio.run(soak(args, sink, app, port))
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(timeout=60)
    time.sleep(1)
    totals = sink.current()  # after the app's final flush
    sink.stop()
    section = report(args, result, totals, sink.telemetry, stdout_path.read_text(errors="replace"))
    print(section)
    if args.out != "-":
        out = Path(args.out)
        out.write_text(replace_section(out.read_text(encoding="utf-8") if out.exists() else "", section),
                       encoding="utf-8")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
