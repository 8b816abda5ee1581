"""Log-formatting throughput (records/second) of qm-otel's formatters against python-json-logger.

Formatters measured, each calling ``formatter.format(record)`` directly (no logger, no handler, no I/O):

* ``qm-otel JsonFormatter``: ``qm_otel.logs.formatters.JsonFormatter("svc")`` (python-json-logger's orjson
  formatter as base class, execution-log fields built by qm-otel, reads the current span's IDs).
* ``pjl JsonFormatter``: ``pythonjsonlogger.json.JsonFormatter`` (stdlib ``json``). This is the baseline the
  project targets: qm-otel's JSON formatter should reach at least 2x its throughput for the same record.
* ``pjl OrjsonFormatter``: ``pythonjsonlogger.orjson.OrjsonFormatter`` (reference).
* ``qm-otel PipeFormatter`` and ``qm-otel TextFormatter(colour=False)`` (reference).

Both python-json-logger formatters get ``fmt="%(asctime)s %(levelname)s %(name)s %(message)s"`` and
``timestamp=True``, so, like qm-otel's, they write a timestamp, the level name, the logger name, the message
and the extras (python-json-logger includes every non-reserved record attribute by default).

Every formatter formats the same record: logger ``app.checkout``, ``INFO``, ``"order %s placed"`` with args
``("A-1001",)`` and the extras ``correlation_id``, ``component``, ``action``, ``status``, ``duration_ms``,
``event``, ``user_id`` and ``items`` set as attributes. Each formatter gets its own copy of that one
template record, so what one formatter writes onto the record (``message``, ``asctime``) never reaches
another.

Two scenarios: ``no span`` (no active span) and ``in span``, where the timing loop runs inside
``TracerProvider().get_tracer("b").start_as_current_span("s")`` so qm-otel's formatters find valid trace
and span IDs (python-json-logger ignores the span, it is timed there for the same-conditions ratio).

Timing, with ``time.perf_counter`` and the garbage collector paused: each formatter first formats
``--warmup`` records, then each of ``--rounds`` rounds times ``--records`` records per formatter (the order
of the formatters rotates from round to round, so slow drift of the machine hits every formatter alike).
The median records/second over the rounds is reported, with the ratio qm-otel JSON / pjl JsonFormatter and a
PASS/BELOW label against the 2x target. The label is informational: the script never asserts on speed and
always exits 0.

Run: ``python benchmarks/log_throughput.py [--records N] [--rounds R] [--warmup W]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import logging
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.sdk.trace import TracerProvider
from pythonjsonlogger.json import JsonFormatter as PjlJsonFormatter
from pythonjsonlogger.orjson import OrjsonFormatter as PjlOrjsonFormatter

from qm_otel.logs.formatters import JsonFormatter, PipeFormatter, TextFormatter

TARGET_RATIO = 2.0
PJL_FMT = "%(asctime)s %(levelname)s %(name)s %(message)s"
QM_JSON = "qm-otel JsonFormatter"
PJL_JSON = "pjl JsonFormatter"
EXTRAS: dict[str, object] = {
    "correlation_id": "order-1001",
    "component": "API",
    "action": "checkout",
    "status": "SUCCESS",
    "duration_ms": 12.5,
    "event": "order_placed",
    "user_id": 42,
    "items": 3,
}


def make_record() -> logging.LogRecord:
    """The one realistic record every formatter formats (extras set as attributes, as ``extra=`` would)."""
    record = logging.LogRecord(
        name="app.checkout",
        level=logging.INFO,
        pathname=__file__,
        lineno=42,
        msg="order %s placed",
        args=("A-1001",),
        exc_info=None,
        func="checkout",
    )
    for key, value in EXTRAS.items():
        setattr(record, key, value)
    return record


def make_formatters() -> dict[str, logging.Formatter]:
    """The formatters under test, in report order."""
    return {
        QM_JSON: JsonFormatter("svc"),
        PJL_JSON: PjlJsonFormatter(fmt=PJL_FMT, timestamp=True),
        "pjl OrjsonFormatter": PjlOrjsonFormatter(fmt=PJL_FMT, timestamp=True),
        "qm-otel PipeFormatter": PipeFormatter(),
        "qm-otel TextFormatter": TextFormatter(colour=False),
    }


def time_format(format_one: Callable[[logging.LogRecord], str], record: logging.LogRecord, records: int) -> float:
    """Format ``record`` ``records`` times; return records per second."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(records):
            format_one(record)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return records / elapsed


@contextlib.contextmanager
def scenario(in_span: bool) -> Iterator[None]:
    """Run the body with no active span, or inside a freshly started SDK span."""
    if not in_span:
        yield
        return
    tracer = TracerProvider().get_tracer("b")
    with tracer.start_as_current_span("s"):
        yield


def run_scenario(in_span: bool, records: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median records/second per formatter for one scenario."""
    template = make_record()
    formatters = make_formatters()
    names = list(formatters)
    bound = {name: (formatter.format, copy.copy(template)) for name, formatter in formatters.items()}
    rates: dict[str, list[float]] = {name: [] for name in names}
    with scenario(in_span):
        for format_one, record in bound.values():
            time_format(format_one, record, warmup)
        for round_no in range(rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                format_one, record = bound[name]
                rates[name].append(time_format(format_one, record, records))
    return {name: statistics.median(values) for name, values in rates.items()}


def show_samples() -> None:
    """Print one formatted line per formatter (outside and inside a span) so the work compared is visible."""
    for in_span in (False, True):
        print(f"sample output ({'in span' if in_span else 'no span'}):")
        with scenario(in_span):
            for name, formatter in make_formatters().items():
                line = formatter.format(make_record())
                print(f"  {name:<22} ({len(line.encode()):>3} B) {line}")
    print()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records timed per formatter per round")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed records per formatter first")
    args = parser.parse_args()

    print(
        f"python {platform.python_version()} | python-json-logger {package_version('python-json-logger')} | "
        f"orjson {package_version('orjson')} | opentelemetry-sdk {package_version('opentelemetry-sdk')} | "
        f"qm-otel {package_version('qm-otel')}"
    )
    print(f"records/round={args.records} rounds={args.rounds} warmup={args.warmup} (median records/s)")
    print()
    show_samples()

    for in_span in (False, True):
        label = "in span" if in_span else "no span"
        medians = run_scenario(in_span, args.records, args.rounds, args.warmup)
        baseline = medians[PJL_JSON]
        print(f"scenario: {label}")
        print(f"  {'formatter':<22} {'records/s':>12} {'us/record':>10} {'vs pjl Json':>12}")
        for name, rate in medians.items():
            print(f"  {name:<22} {rate:>12,.0f} {1e6 / rate:>10.2f} {rate / baseline:>11.2f}x")
        ratio = medians[QM_JSON] / baseline
        verdict = "PASS" if ratio >= TARGET_RATIO else "BELOW"
        print(f"  ratio qm-otel JSON / pjl JsonFormatter = {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x): {verdict}")
        print()
    print("(informational only: this script never asserts on speed)")


if __name__ == "__main__":
    main()
