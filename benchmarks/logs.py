"""Log records/s end to end: ``logger.info(..., extra=...)`` to one stdout line, in a fresh process each.

Variants: python-json-logger's ``JsonFormatter`` on a ``StreamHandler`` (the baseline), and qm-otel's
``json`` (with its code location, and without: ``-nocode``), ``text`` and ``pipe`` stdout formats
through ``qm_otel.setup()`` (exporters off), and
``json`` with OTLP log export on to the benchmark sink (the time includes the final flush). stdout
goes to a file. ``python -m benchmarks.logs VARIANT RECORDS`` prints one result line; the benchmark
runs every variant once a round (``run_round``), in each round's rotated order.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = "LOGS-RESULT "
EXTRA = {"order_id": "A-1001", "user_id": 42, "items": 3, "amount": 19.5}
VARIANTS = ("pjl-json", "qm-json", "qm-json-nocode", "qm-text", "qm-pipe", "qm-json+otlp")


def _configure(variant: str) -> Any:
    """Set up logging for ``variant``; return what flushes at the end."""
    if variant == "pjl-json":
        from pythonjsonlogger.json import JsonFormatter

        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=True))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        return lambda: None
    import qm_otel

    fmt = variant.removeprefix("qm-").removesuffix("+otlp").removesuffix("-nocode")
    qm_otel.setup(service_name="bench", log_format=fmt, traces_exporter="none", metrics_exporter="none",
                  logs_exporter="otlp" if variant.endswith("+otlp") else "none",
                  log_code_location=not variant.endswith("-nocode"))
    return lambda: qm_otel.shutdown(timeout_s=120)


def child(variant: str, records: int) -> None:
    flush = _configure(variant)
    log = logging.getLogger("app.checkout")
    for n in range(200):  # warm-up
        log.info("order %s placed", n, extra=EXTRA)
    started = time.perf_counter()
    for n in range(records):
        log.info("order %s placed", n, extra=EXTRA)
    flush()
    sys.stdout.flush()
    elapsed = time.perf_counter() - started
    print(MARKER + json.dumps({"records_per_s": records / elapsed}), file=sys.stderr, flush=True)


def run_one(variant: str, records: int, env: dict[str, str], workdir: Path) -> float:
    """``variant`` in a fresh process, stdout to a file: its records/s."""
    with (workdir / variant).open("wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "benchmarks.logs", variant, str(records)], cwd=ROOT, env=env,
                              stdout=stdout, stderr=subprocess.PIPE, text=False, check=True, timeout=600)
    line = next(x for x in done.stderr.decode().splitlines() if x.startswith(MARKER))
    return float(json.loads(line.removeprefix(MARKER))["records_per_s"])


def run_round(records: int, endpoint: str, order: Sequence[str] = VARIANTS) -> dict[str, float]:
    """One round: each variant once, in ``order``; records/s by variant (in ``VARIANTS`` order)."""
    results = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QM_OTEL_"))}
    env.update(PYTHONPATH=str(ROOT), OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, QM_OTEL_ENVIRONMENT="production")
    with tempfile.TemporaryDirectory(prefix="qm-bench-logs-") as tmp:
        for variant in order:
            results[variant] = run_one(variant, records, env, Path(tmp))
            print(f"   logs {variant}: {results[variant]:,.0f} records/s", flush=True)
    return {variant: results[variant] for variant in VARIANTS if variant in results}


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
