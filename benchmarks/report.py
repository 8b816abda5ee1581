"""``docs/benchmarks.md`` from one run of ``benchmarks/bench.py``: figures, ratios and the targets."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.bench import Variant


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}×" if base else "-"


def _received(variant: Variant, counts: dict[str, Any], requests: float) -> str:
    """``spans / logs / points`` received against what the requests should have produced."""
    expected_logs = variant.logs_per_request * requests
    logs = counts["logs"].get("app", 0) + counts["logs"].get("qm_otel.requests", 0)
    parts = [f"{counts['server_spans']:,}/{requests:,.0f} server spans ({counts['spans']:,} in all)"]
    parts.append(f"{logs:,}/{expected_logs:,.0f} logs" if expected_logs else f"{logs:,} logs")
    expected_points = requests if variant.duration_points else 0
    parts.append(f"{counts['duration_points']:,}/{expected_points:,.0f} points")
    short = [requests - counts["server_spans"], expected_logs - logs, expected_points - counts["duration_points"]]
    shortfall = max(short)
    return "; ".join(parts) + (f" — **short by {shortfall:,.0f}**" if shortfall > 0 and variant.key != "bare" else "")


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(variants: list[Variant], results: dict[str, dict[str, Any]], logs: dict[str, float],
           machine: dict[str, str], skipped: list[str], *, short: bool) -> str:
    """The Markdown report."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    get = results.get
    bare, stock, logfire = get("bare"), get("stock"), get("logfire")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `./scripts/bench` ({'--short, not for comparison' if short else 'full run'}) on {now}. "
        "Every variant serves the same FastAPI app (`benchmarks/apps/common.py`: one JSON route that writes one "
        "log line), exports all signals over OTLP/HTTP to one sink on loopback (`benchmarks/sink.py`, its own "
        "process, which counts what it receives), 100 % sampled, one uvicorn worker. Figures are never asserted; "
        "ratios matter more than absolute numbers on a shared VM (this one drifts 20–35 % between runs).",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()),
        "",
    ]
    if skipped:
        lines += [f"Not run (environment not installed): {', '.join(skipped)}.", ""]
    lines += [
        "## HTTP under load (`wrk -t1 -c8`, loopback)",
        "",
        "| variant | requests/s | × bare | × stock | × logfire | p50 ms | p99 ms | p99 × bare | received by the sink |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        h = results[v.key]["http"]
        lines.append(
            f"| {v.label} | {h['rps']:,.0f} | {_ratio(h['rps'], bare and bare['http']['rps'])} | "
            f"{_ratio(h['rps'], stock and stock['http']['rps'])} | "
            f"{_ratio(h['rps'], logfire and logfire['http']['rps'])} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | "
            f"{_ratio(h['p99_ms'], bare and bare['http']['p99_ms'])} | "
            f"{_received(v, h['sink'], h['requests'])} |")
    notes = [f"- {v.label}: {v.note}." for v in variants if v.note]
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        "## CPU per request, in-process (ASGI driver at full speed; all threads; final flush included)",
        "",
        "| variant | CPU µs/request | × bare | added µs | main thread µs | received by the sink |",
        "|---|---|---|---|---|---|",
    ]
    base_cpu = bare and bare["inprocess"]["cpu_us_per_request"]
    for v in variants:
        r = results[v.key]["inprocess"]
        total = r["requests"] + r["warmup"]
        added = r["cpu_us_per_request"] - base_cpu if base_cpu else float("nan")
        lines.append(f"| {v.label} | {r['cpu_us_per_request']:,.0f} | {_ratio(r['cpu_us_per_request'], base_cpu)} | "
                     f"{added:,.0f} | {r['main_thread_us_per_request']:,.0f} | {_received(v, r['sink'], total)} |")
    lines += [
        "",
        "## Start-up (import the app module: build the app, set telemetry up; a fresh process)",
        "",
        "Under `opentelemetry-instrument` the wrapper sets telemetry up before the timed import, so only the "
        "RSS of those rows compares.",
        "",
        "| variant | import s | + ms over bare | peak RSS MB | + MB over bare |",
        "|---|---|---|---|---|",
    ]
    for v in variants:
        s = results[v.key]["startup"]
        base = bare and bare["startup"]
        plus_ms = f"{(s['import_s'] - base['import_s']) * 1000:+.0f}" if base and not v.zero_code else "-"
        plus_mb = s["rss_mb"] - base["rss_mb"] if base else float("nan")
        lines.append(f"| {v.label} | {s['import_s']:.3f} | {plus_ms} | {s['rss_mb']:.1f} | {plus_mb:+.1f} |")
    pjl = logs.get("pjl-json")
    lines += [
        "",
        "## Log records/s end to end (`logger.info(..., extra=...)` → one stdout line; a file)",
        "",
        "| variant | records/s | × python-json-logger |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {rate:,.0f} | {_ratio(rate, pjl)} |" for name, rate in logs.items()]
    lines += ["", "## Targets (issue 11)", "", "| target | measured | verdict |", "|---|---|---|"]
    qm = get("qm-setup")
    if qm and bare:
        rps, cpu = qm["http"]["rps"], qm["inprocess"]["cpu_us_per_request"]
        rows = [
            ("requests/s ≥ 0.55× bare (reach for 0.7×)", rps / bare["http"]["rps"], 0.55),
            ("CPU per request ≤ 3.6× bare", cpu / bare["inprocess"]["cpu_us_per_request"], None),
            ("p99 ≤ 3× bare", qm["http"]["p99_ms"] / bare["http"]["p99_ms"], None),
        ]
        if stock:
            rows.insert(0, ("requests/s ≥ 2× the stock distro", rps / stock["http"]["rps"], 2.0))
        if logfire:
            rows.insert(1, ("requests/s ≥ 2× logfire", rps / logfire["http"]["rps"], 2.0))
        for name, value, floor in rows:
            ok = value >= floor if floor is not None else value <= (3.6 if "CPU" in name else 3.0)
            lines.append(f"| {name} | {value:.2f}× | {_verdict(ok)} |")
        startup_ms = (qm["startup"]["import_s"] - bare["startup"]["import_s"]) * 1000
        startup_mb = qm["startup"]["rss_mb"] - bare["startup"]["rss_mb"]
        lines.append(f"| start-up ≤ +150 ms | {startup_ms:+.0f} ms | {_verdict(startup_ms <= 150)} |")
        lines.append(f"| start-up ≤ +15 MB RSS | {startup_mb:+.1f} MB | {_verdict(startup_mb <= 15)} |")
    if pjl:
        lines.append(f"| JSON log call ≥ 2× python-json-logger | {logs['qm-json'] / pjl:.2f}× | "
                     f"{_verdict(logs['qm-json'] / pjl >= 2)} |")
        lines.append(f"| with OTLP export too ≥ 1× | {logs['qm-json+otlp'] / pjl:.2f}× | "
                     f"{_verdict(logs['qm-json+otlp'] / pjl >= 1)} |")
    lines += ["", *PROFILE_NOTES]
    return "\n".join(lines) + "\n"


#: what dominates the missed targets, from the profiles taken when the figures above were first measured
#: (py-spy and cProfile on the in-process run and on uvicorn under wrk, 2026-11-30); kept by hand
PROFILE_NOTES = [
    "## Where the remaining cost is, and the next steps (profiles of 2026-11-30)",
    "",
    "- **CPU per request (main thread ≈ 80 % of it).** FastAPI's own routing and validation are ≈ 45 % of the "
    "main thread (the bare app's share). Of qm-otel's part (cProfile, 3,000 requests in-process): the two log "
    "records ≈ 26 % (the SDK's `Logger.emit` — the API record converted to `ReadWriteLogRecord`, every attribute "
    "cleaned into `BoundedAttributes` — ≈ 11 %, the stdout write ≈ 10 %, JSON ≈ 5 %), the stdlib `logging` call "
    "itself (`LogRecord`, caller lookup) ≈ 20 µs a record, the duration histogram ≈ 9 % (attribute hashing, "
    "exemplar sampling), starting and ending the span ≈ 10 % (`_clean_attribute_value` runs for each of ≈ 11 "
    "attributes per item: 122,000 calls for 3,000 requests). Export now costs the request thread nothing: the "
    "batch threads only encode and the delivery threads send. Next: hand the SDK pre-cleaned, per-route "
    "attribute sets (span and histogram), a request-log record made without the stdlib's caller lookup, and a "
    "C-accelerated path for the OTLP bytes.",
    "- **Nothing bought by dropping.** With Python's 5 ms switch interval the export threads fell behind a busy "
    "request thread (15,000 in-process requests: 8,704 of 15,300 spans delivered); with qm-otel's 0.5 ms while "
    "exporting, every span, record and point arrives (the tables above), at full speed and under `wrk`.",
    "- **p99 and requests/s under `wrk`.** The 0.5 ms switch interval cut p99 from ≈ 55 to ≈ 40 ms at the same "
    "requests/s. With the exporters off, p99 falls to ≈ 12 ms and requests/s rise by half: on 2 cores the export "
    "threads, the sink, wrk and the app compete for the CPU and the GIL. Next: export from a separate process "
    "(or a collector-side path) so the app's GIL carries only the request.",
    "- **Start-up.** Of `setup()`: the SDK's providers and OTLP exporters (`requests` ≈ 100 ms) and the log "
    "handler; httpx and every other installed instrumentation's library are instrumented (and their "
    "dependencies checked) only when the app imports them. With qm-otel[libraries] installed (as here) "
    "`setup()` cost ≈ 80 ms and 1.3 MB more (≈ 700 vs ≈ 630 ms, three runs each, "
    "`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=*` for the second): the entry-point walk, then ≈ 20 ms with every "
    "dependency check and ≈ 14 ms since they wait for the import, and requests and urllib3, which the OTLP "
    "exporter itself imports, instrumented at once. Next: create the exporters' HTTP sessions on first export.",
    "- **JSON log call end to end.** At the handler the qm-otel JSON path is ≈ 1.9× python-json-logger's "
    "(20 µs vs 39 µs a record here), but the stdlib `logging` call around both (≈ 20 µs) dilutes it; the "
    "run-to-run spread of this figure on this VM is ± 30 % (qm-json 16,051–22,315 records/s in one hour). Code "
    "location (`module`, `function`, `line`) costs no measurable time: the stdlib has already looked them up.",
]
