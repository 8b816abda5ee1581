"""``docs/benchmarks.md`` from one run of ``benchmarks/bench.py``: figures, ratios and the targets.

A run has one or more interleaved rounds. Each figure is shown as the median over the rounds with
the rounds' range, ``587 (561-602)`` (an en dash); each ratio (and each difference to the bare app) is the median
of the per-round ones, since the two variants of a ratio ran close together in the same round.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.support import Variant

#: one round's figures of one variant -> the number wanted
Pick = Callable[[dict[str, Any]], float]
#: the variant the targets are about
TARGET_VARIANT = "qm-setup"


@dataclass(frozen=True)
class Run:
    """What one benchmark run measured: by variant key, one dict of figures per round; log records/s a round."""

    variants: list[Variant]
    results: dict[str, list[dict[str, Any]]]
    logs: list[dict[str, float]]
    machine: dict[str, str]
    skipped: list[str]
    short: bool
    minutes: float

    @property
    def rounds(self) -> int:
        return max([len(self.logs), *(len(r) for r in self.results.values())])


@dataclass(frozen=True)
class Target:
    """A target of issue 21: its per-round values and the limit the median must meet."""

    name: str
    values: list[float]
    unit: str  # "\N{MULTIPLICATION SIGN}", " ms" or " MB"
    limit: float
    at_least: bool

    def show(self, value: float) -> str:
        return f"{value:.2f}×" if self.unit == "×" else f"{value:+.0f} ms" if self.unit == " ms" else f"{value:+.1f} MB"

    def row(self) -> str:
        if not self.values:
            return f"| {self.name} | not measured | - | not measured |"
        median = statistics.median(self.values)
        ok = median >= self.limit if self.at_least else median <= self.limit
        rounds = ", ".join(self.show(v) for v in self.values)
        return f"| {self.name} | {self.show(median)} | {rounds} | {'met' if ok else '**missed**'} |"


def rps(figures: dict[str, Any]) -> float:
    return float(figures["http"]["rps"])


def p99(figures: dict[str, Any]) -> float:
    return float(figures["http"]["p99_ms"])


def cpu(figures: dict[str, Any]) -> float:
    return float(figures["inprocess"]["cpu_us_per_request"])


def import_ms(figures: dict[str, Any]) -> float:
    return float(figures["startup"]["import_s"]) * 1000


def rss(figures: dict[str, Any]) -> float:
    return float(figures["startup"]["rss_mb"])


def _format(value: float, fmt: str) -> str:
    """``value`` in ``fmt``, a rounded-off negative zero as zero."""
    text = format(value, fmt)
    return text if text.strip("+-0.,") or not text.startswith("-") else text.replace("-", "+" if "+" in fmt else "")


def _figure(values: Sequence[float], fmt: str) -> str:
    """The median, with the rounds' range when they differ: ``587 (561-602)``, en dash."""
    if not values:
        return "-"
    median, low, high = (_format(x, fmt) for x in (statistics.median(values), min(values), max(values)))
    return median if low == high else f"{median} ({low}–{high})"


def _pairs(run: Run, key: str, base: str, pick: Pick) -> list[tuple[float, float]]:
    """``pick`` of ``key`` and of ``base``, round by round (empty when either did not run)."""
    return [(pick(a), pick(b)) for a, b in zip(run.results.get(key, []), run.results.get(base, []), strict=False)]


def _ratios(run: Run, key: str, base: str, pick: Pick) -> list[float]:
    return [a / b for a, b in _pairs(run, key, base, pick) if b]


def _diffs(run: Run, key: str, base: str, pick: Pick) -> list[float]:
    return [a - b for a, b in _pairs(run, key, base, pick)]


def _log_ratios(run: Run, name: str, base: str = "pjl-json") -> list[float]:
    return [r[name] / r[base] for r in run.logs if name in r and r.get(base)]


def _ratio(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}×" if values else "-"


def _received(variant: Variant, rounds: Sequence[tuple[dict[str, Any], float]]) -> str:
    """``spans / logs / points`` received over all rounds against what the requests should have produced.

    A shortfall is counted round by round (one round's surplus never hides another's loss) and named.
    """
    got = {"server": 0, "spans": 0, "logs": 0, "points": 0}
    want = {"server": 0.0, "logs": 0.0, "points": 0.0}
    short_by, short_rounds = 0.0, []
    for index, (counts, requests) in enumerate(rounds, 1):
        have = (counts["server_spans"], counts["logs"].get("app", 0) + counts["logs"].get("qm_otel.requests", 0),
                counts["duration_points"])
        expected = (requests, variant.logs_per_request * requests, requests if variant.duration_points else 0)
        for name, value, wanted in zip(("server", "logs", "points"), have, expected, strict=True):
            got[name] += value
            want[name] += wanted
        got["spans"] += counts["spans"]
        short = max(w - h for h, w in zip(have, expected, strict=True))
        if short > 0 and variant.exports:
            short_by += short
            short_rounds.append(str(index))
    if not variant.exports:
        return (f"nothing expected for {want['server']:,.0f} requests: {got['spans']:,} spans, {got['logs']:,} logs, "
                f"{got['points']:,} points")
    parts = [f"{got['server']:,}/{want['server']:,.0f} server spans ({got['spans']:,} in all)",
             f"{got['logs']:,}/{want['logs']:,.0f} logs" if want["logs"] else f"{got['logs']:,} logs",
             f"{got['points']:,}/{want['points']:,.0f} points"]
    flag = f" — **short by {short_by:,.0f}** (round {', '.join(short_rounds)})" if short_by else ""
    return "; ".join(parts) + flag


def _header(run: Run) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rounds = (f"{run.rounds} interleaved rounds (each runs every variant once, in a rotated order, then every log "
              "variant): each figure is the median over the rounds with their range in brackets, each ratio the "
              "median of the per-round ratios" if run.rounds > 1 else "one round")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `./scripts/bench` ({'--short, not for comparison' if run.short else 'full run'}) on {now}, "
        f"{rounds}; the run took {run.minutes:.0f} minutes. "
        "Every variant serves the same FastAPI app (`benchmarks/apps/common.py`: one JSON route that writes one "
        "log line), exports all signals over OTLP/HTTP to one sink on loopback (`benchmarks/sink.py`, its own "
        "process, which counts what it receives), 100 % sampled, one uvicorn worker. Figures are never asserted; "
        "ratios matter more than absolute numbers on a shared VM (this one drifts 20–35 % between runs).",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in run.machine.items()),
        "",
    ]
    if run.skipped:
        lines += [f"Not run (environment not installed): {', '.join(run.skipped)}.", ""]
    return lines


def _http(run: Run) -> list[str]:
    lines = [
        "## HTTP under load (`wrk -t1 -c8`, loopback)",
        "",
        "| variant | requests/s | × bare | × stock | × logfire | p50 ms | p99 ms | p99 × bare | "
        "received by the sink (all rounds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in run.variants:
        rounds = run.results[v.key]
        http = [r["http"] for r in rounds]
        lines.append(
            f"| {v.label} | {_figure([rps(r) for r in rounds], ',.0f')} | {_ratio(_ratios(run, v.key, 'bare', rps))} | "
            f"{_ratio(_ratios(run, v.key, 'stock', rps))} | {_ratio(_ratios(run, v.key, 'logfire', rps))} | "
            f"{_figure([h['p50_ms'] for h in http], '.2f')} | {_figure([h['p99_ms'] for h in http], '.2f')} | "
            f"{_ratio(_ratios(run, v.key, 'bare', p99))} | "
            f"{_received(v, [(h['sink'], h['requests']) for h in http])} |")
    notes = [f"- {v.label}: {v.note}." for v in run.variants if v.note]
    return lines + (["", *notes] if notes else [])


def _cpu(run: Run) -> list[str]:
    lines = [
        "## CPU per request, in-process (ASGI driver at full speed; all threads; final flush included)",
        "",
        "Per thread from `/proc/self/task/*/stat` (utime + stime, 10 ms ticks), read at the start, before the "
        "final flush and after it: the main thread serves the requests; the export threads are the others, each "
        "up to its last reading; *ended threads* is the process CPU (`time.process_time`, the total) beyond "
        "those, i.e. the flush work of threads that ended during the flush.",
        "",
        "| variant | CPU µs/request | × bare | added µs | main thread µs | export threads µs | ended threads µs | "
        "received by the sink (all rounds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in run.variants:
        runs = [r["inprocess"] for r in run.results[v.key]]
        per = {k: [r[f"{k}_us_per_request"] for r in runs] for k in ("main_thread", "export_threads", "ended_threads")}
        lines.append(
            f"| {v.label} | {_figure([r['cpu_us_per_request'] for r in runs], ',.0f')} | "
            f"{_ratio(_ratios(run, v.key, 'bare', cpu))} | {_figure(_diffs(run, v.key, 'bare', cpu), ',.0f')} | "
            f"{_figure(per['main_thread'], ',.0f')} | {_figure(per['export_threads'], ',.0f')} | "
            f"{_figure(per['ended_threads'], ',.0f')} | "
            f"{_received(v, [(r['sink'], r['requests'] + r['warmup']) for r in runs])} |")
    threads = [line for v in run.variants if (line := _threads(v, run.results[v.key]))]
    return lines + (["", "Export threads by name, µs/request (median over the rounds; under 1 µs left out):", "",
                     *threads] if threads else [])


def _threads(variant: Variant, rounds: list[dict[str, Any]]) -> str:
    """The variant's non-main threads by name and their median µs/request, busiest first ('' when none)."""
    names = {name for r in rounds for name in r["inprocess"].get("threads_us_per_request", {})}
    medians = {name: statistics.median(r["inprocess"].get("threads_us_per_request", {}).get(name, 0.0)
                                       for r in rounds) for name in names}
    shown = sorted(((value, name) for name, value in medians.items() if value >= 1), reverse=True)
    return f"- {variant.label}: " + ", ".join(f"`{name}` {value:,.0f}" for value, name in shown) if shown else ""


def _startup(run: Run) -> list[str]:
    lines = [
        "## Start-up (import the app module: build the app, set telemetry up; a fresh process)",
        "",
        "Under `opentelemetry-instrument` the wrapper sets telemetry up before the timed import, so only the "
        "RSS of those rows compares. Each round's figure is the median of its start-ups.",
        "",
        "| variant | import s | + ms over bare | peak RSS MB | + MB over bare |",
        "|---|---|---|---|---|",
    ]
    for v in run.variants:
        rounds = run.results[v.key]
        plus_ms = "-" if v.zero_code else _figure(_diffs(run, v.key, "bare", import_ms), "+,.0f")
        lines.append(f"| {v.label} | {_figure([r['startup']['import_s'] for r in rounds], '.3f')} | {plus_ms} | "
                     f"{_figure([rss(r) for r in rounds], '.1f')} | "
                     f"{_figure(_diffs(run, v.key, 'bare', rss), '+.1f')} |")
    return lines


def _logs(run: Run) -> list[str]:
    names = list(dict.fromkeys(name for r in run.logs for name in r))
    lines = [
        "## Log records/s end to end (`logger.info(..., extra=...)` → one stdout line; a file)",
        "",
        "| variant | records/s | × python-json-logger |",
        "|---|---|---|",
    ]
    return lines + [f"| {name} | {_figure([r[name] for r in run.logs if name in r], ',.0f')} | "
                    f"{_ratio(_log_ratios(run, name))} |" for name in names]


def _spread(values: Sequence[float]) -> float:
    """How far a variant's figure moved between rounds: max / min - 1 (0 with fewer than two rounds)."""
    return max(values) / min(values) - 1 if len(values) > 1 and min(values) > 0 else 0.0


def _watchdog(run: Run) -> list[str]:
    """The event-loop watchdog's cost (issue 25): qm-setup against qm-nowatch, beside the rounds' own spread."""
    on, off = TARGET_VARIANT, "qm-nowatch"
    if not (run.results.get(on) and run.results.get(off)):
        return []
    rps_ratio, cpu_diff = _ratios(run, on, off, rps), _diffs(run, on, off, cpu)
    noise = max(_spread([rps(r) for r in run.results[key]]) for key in (on, off))
    cost = abs(statistics.median(rps_ratio) - 1)
    verdict = "within the run-to-run noise" if cost <= noise else "**beyond the run-to-run noise**"
    return [
        "## The event-loop watchdog's cost (watchdog on: `qm-setup`; off: `qm-nowatch`)",
        "",
        "| figure | per round | median |",
        "|---|---|---|",
        f"| requests/s on ÷ off | {', '.join(f'{v:.3f}×' for v in rps_ratio)} | {_ratio(rps_ratio)} |",
        f"| CPU µs/request on − off (in-process) | {', '.join(f'{v:+.0f}' for v in cpu_diff)} | "
        f"{statistics.median(cpu_diff):+.0f} |" if cpu_diff else "| CPU µs/request on − off | - | - |",
        "",
        f"Requests/s moved by up to {noise:.1%} between rounds of the same variant; the watchdog's median "
        f"difference is {cost:.1%}: {verdict}.",
    ]


def targets(run: Run) -> list[Target]:
    """Issue 21's targets, for the ``qm-setup`` variant; a target with a variant missing has no values."""
    qm = TARGET_VARIANT
    return [
        Target("requests/s ≥ 0.55× bare", _ratios(run, qm, "bare", rps), "×", 0.55, True),
        Target("requests/s ≥ 2× the stock distro", _ratios(run, qm, "stock", rps), "×", 2.0, True),
        Target("requests/s ≥ 2× logfire", _ratios(run, qm, "logfire", rps), "×", 2.0, True),
        Target("p99 ≤ 3× bare", _ratios(run, qm, "bare", p99), "×", 3.0, False),
        Target("CPU per request (all threads, in-process) ≤ 3.6× bare", _ratios(run, qm, "bare", cpu), "×", 3.6,
               False),
        Target("JSON log call end to end ≥ 2× python-json-logger (qm-json)", _log_ratios(run, "qm-json"), "×", 2.0,
               True),
        Target("with OTLP log export on ≥ 1× python-json-logger (qm-json+otlp)", _log_ratios(run, "qm-json+otlp"),
               "×", 1.0, True),
        Target("start-up ≤ +150 ms over bare", _diffs(run, qm, "bare", import_ms), " ms", 150, False),
        Target("start-up ≤ +15 MB RSS over bare", _diffs(run, qm, "bare", rss), " MB", 15, False),
    ]


def _targets(run: Run) -> list[str]:
    label = next((v.label for v in run.variants if v.key == TARGET_VARIANT), TARGET_VARIANT)
    return [
        "## Targets (issue 21)",
        "",
        f"For {label}; the verdict is on the median of the per-round figures (a variant not run: not measured).",
        "",
        "| target | measured (median) | per round | verdict |",
        "|---|---|---|---|",
        *(target.row() for target in targets(run)),
    ]


def render(run: Run) -> str:
    """The Markdown report."""
    sections = [_header(run), _http(run), _cpu(run), _startup(run), _logs(run), _targets(run), _watchdog(run),
                PROFILE_NOTES]
    return "\n".join(line for section in sections for line in [*section, ""]).rstrip("\n").replace(
        "\n\n\n", "\n\n") + "\n"


#: the design changes of issue 21 and what each measurably did, and what dominates the targets still missed;
#: kept by hand (instruction counts: valgrind callgrind with instrumentation switched on after the warm-up,
#: all threads, final flush included — deterministic where wall time on this VM drifts 20-35 % between runs)
PROFILE_NOTES = [
    "## Design changes and their measured effect (issue 21)",
    "",
    "Instructions per request, in-process (1,000 requests after a 600-request warm-up, every thread, the final "
    "flush included; `valgrind --tool=callgrind`, which counts the same for the same code whatever the VM "
    "does): bare app 0.50 M; qm-otel `setup()` on main e4e7fde **2.57 M**, now **1.54 M** (qm-otel's own part "
    "2.07 M → 1.04 M); with every exporter off 1.14 M.",
    "",
    "| change | measured effect |",
    "|---|---|",
    "| the request log written once, from its fields (no stdlib `LogRecord`, no handler pass, no second SDK "
    "record) | its cost per request 640 k → 240 k instructions (request log on vs off, before and after) |",
    "| the log lane: qm-otel's records into its batch processor without `Logger.emit` → `ReadWriteLogRecord` → "
    "`BoundedAttributes` → `ReadableLogRecord` | a record's OTLP export ≈ 200 k → ≈ 90 k instructions (40 k on "
    "the calling thread); `emit` with the lane 7.5 µs a record |",
    "| the protobuf writer: cached attribute fields, varint table, severity fields | 13 µs a span, 6 µs a log "
    "record (SDK encoder 65 and 39; upb messages filled in bulk 46 and 33; OTLP/JSON with orjson 12.5 and 6.6 µs "
    "at 2.2× the bytes, so no `http/json` option) — `python -m benchmarks.encoding_micro` |",
    "| the request histograms aggregated by qm-otel and merged into the readers | 2.6 µs a record against the "
    "SDK's 15.5–19.4 (one reader) — `python -m benchmarks.histogram_micro`; the body-size histograms stay on "
    "(contrib records them; ≈ 3 µs each now) |",
    "| the request read once (headers decoded, query redacted, parent context extracted, excluded-URL answer "
    "and method kept) | one `RequestView`, one redaction, one extraction per request (counted by a test) |",
    "| the JSON line: one span-context read per record, extras through the keys, the timestamp per millisecond "
    "| the handler's `emit` 9.3 → 7.6 µs a record (JSON only) |",
    "| the OTLP/HTTP exporter made on the first send; no `packaging` at `setup()` | start-up +295 → +191 ms "
    "and +16.9 → +6.6 MB (medians of 15 interleaved start-ups, before bytecode was compiled first) |",
    "| batch queues of 8192 (spans, log records) | 925 of 10,400 spans dropped at full speed in-process with "
    "2048 → none |",
    "| logs shipped by the collector from stdout (`qm-filelog`, OTLP log export off) | in the run above: CPU "
    "572 against 692 µs a request (export threads 82 against 165), 1,069 against 997 requests/s, p99 30.3 "
    "against 38.9 ms; the records' latency becomes one poll of the collector |",
    "",
    "A buffered stdout write was measured and not offered: 2.31 vs 2.34 µs a line to a file, 2.73 vs 1.15 µs "
    "to a pipe — ≈ 3 µs a request on a pipe, for up to an interval of lines lost to a hard kill that today are "
    "in the pipe already.",
    "",
    "## Where the remaining cost is",
    "",
    "- **Export threads contending for the GIL.** 30,000 `logger.info` calls with OTLP export on: 2.83 s of "
    "logging and 3.9 s of CPU while the batch and sender threads export alongside (the main thread 2.48 s user "
    "+ 0.51 s system; the export threads 15,860 and 12,354 voluntary context switches, most of them waits for "
    "the GIL); the same calls with the export held until shutdown (`OTEL_BLRP_SCHEDULE_DELAY=100000`, a batch "
    "of 40,000): 1.46 s of logging, 0.56 s of export at shutdown, 2.2 s of CPU. Handing the GIL back and forth "
    "costs this VM more than the export work itself; a 5 ms switch interval instead of 0.5 ms changes it "
    "little (2.50 s). This is most of the gap between the instruction counts above (qm-otel 3.1× the bare app) "
    "and the CPU figures (≈ 5–7×). Next: take the encoding and sending out of the application's process "
    "(a child process fed through a pipe or shared memory, or the collector reading stdout — the `qm-filelog` "
    "row: export threads 82 µs a request against 165), so the app's GIL carries only the request.",
    "- **The SDK span.** Starting and ending the server span (`Span`, `BoundedAttributes` cleaning each of ≈ 13 "
    "attributes, the `ReadableSpan` copy, two processors) is now the largest single qm-otel item on the "
    "request thread (≈ 15 % of it; attribute cleaning and setting ≈ 37 % of the span's cost); a server span of "
    "qm-otel's own, with the SDK's kept for anything a user plugs in, is the next step there.",
    "- **The JSON log call.** The stdlib `logger.info(..., extra=...)` to a no-op handler costs 82 k "
    "instructions; python-json-logger's whole call 203 k; qm-otel's 139 k. In instructions that is 1.46×; in "
    "time this run measured 2.02× (median; rounds 1.86–2.07×), so the target holds only on the median.",
    "- **Start-up.** `import qm_otel` (≈ 180 ms after FastAPI; the SDK's provider modules ≈ 50–60 ms) and the "
    "interpreter's first full collection (16–25 ms, which the bare app's import stops short of).",
]
