"""Drive one variant's app in-process at full speed: CPU per request over all threads, export included.

Run in a fresh process per variant (``python -m benchmarks.inprocess benchmarks.apps.qm_setup``, or
under ``opentelemetry-instrument`` for the zero-code variants). An ASGI driver calls the app
directly (no sockets, no server), one request after another, then the variant's ``flush()`` exports
what is buffered; the CPU time of the whole process (``time.process_time``: every thread, so the
export threads' encoding counts too) over requests + flush, divided by the requests, is printed as
one JSON line. A ``--profile`` file gets a pyinstrument profile of the same run instead.

Per thread (Linux): ``/proc/self/task/*/stat`` (utime + stime) is read at the start, before the flush
and after it. Each thread counts up to its last reading (after the flush if it still lives, else
before it), named by its Python ``threading`` name, else its ``comm``; the main thread is the request
thread, the others together are the "export threads", and what the process used beyond all of them
(threads that ended during the flush, after their last reading; tick rounding) is "ended threads".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
MARKER = "INPROCESS-RESULT "
TASKS = Path("/proc/self/task")
#: how often the driver lets the event loop turn: well inside the watchdog's 200 ms, well over the GIL's 5 ms
TURN_S = 0.02
#: thread id -> (name, CPU seconds so far)
Threads = dict[int, tuple[str, float]]


def scope_for(item_id: int) -> Scope:
    """A fresh ASGI HTTP scope for ``GET /items/{item_id}`` as uvicorn builds it (middlewares mutate it)."""
    path = f"/items/{item_id}"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def request(app: ASGIApp, item_id: int) -> int:
    """One request through the app; its status code."""
    status = 0
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a client that never sends more (like a kept-alive connection)
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope_for(item_id), receive, send)
    return status


async def drive(app: ASGIApp, requests: int) -> int:
    """Call the app ``requests`` times, one after another, letting the loop turn every :data:`TURN_S`.

    A server's loop runs its other callbacks between requests; without a turn the loop would never
    turn in the whole run, and qm-otel's event-loop watchdog would rightly report the run as one long
    stall. Not after every request: each turn polls the selector, which releases the GIL, and a main
    thread that releases and retakes the GIL that often starves every waiting thread (CPython's GIL
    forces a switch only after a waiter's 5 ms passed without one): the SDK's batch processors then
    never run and their queues drop spans (measured: the stock distro's sink got 4,267 of 8,400
    server spans with a turn per request).
    """
    ok = 0
    turned = time.perf_counter()
    for n in range(requests):
        ok += await request(app, n % 1000) == 200
        if time.perf_counter() - turned >= TURN_S:
            await asyncio.sleep(0)
            turned = time.perf_counter()
    return ok


def thread_cpu() -> Threads:
    """Every live thread of this process: its name and its CPU seconds (utime + stime); empty off Linux."""
    if not TASKS.is_dir():
        return {}
    tick = 1 / os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    threads = {}
    for task in TASKS.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # ended while we looked
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        tid = int(task.name)
        threads[tid] = (names.get(tid, comm), (int(fields[11]) + int(fields[12])) * tick)  # fields 14 and 15
    return threads


def per_thread(start: Threads, before_flush: Threads, end: Threads, process_s: float,
               requests: int) -> dict[str, Any]:
    """µs per request of the main thread, the other threads (together and by name) and the ended ones."""
    last = {**before_flush, **end}  # each thread up to its last reading
    # the earliest reading's name: a thread that has left ``threading`` while its task lingers reads as its comm
    names = {tid: name for reading in (end, before_flush, start) for tid, (name, _) in reading.items()}
    used = {tid: (names[tid], seconds - start.get(tid, ("", 0.0))[1]) for tid, (_, seconds) in last.items()}
    main_s = used.pop(threading.main_thread().native_id or 0, ("", float("nan")))[1]
    by_name: dict[str, float] = {}
    for name, seconds in used.values():
        by_name[name] = by_name.get(name, 0.0) + seconds
    others = sum(by_name.values()) if last else float("nan")
    scale = 1e6 / requests
    return {
        "main_thread_us_per_request": main_s * scale,
        "export_threads_us_per_request": others * scale,
        "ended_threads_us_per_request": (process_s - main_s - others) * scale,
        "threads_us_per_request": {name: seconds * scale for name, seconds in sorted(by_name.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("module", help="the variant's app module, with `app` and `flush()`")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--profile", help="write a pyinstrument HTML profile here instead of timing")
    args = parser.parse_args()
    variant = importlib.import_module(args.module)
    app = variant.app
    asyncio.run(drive(app, args.warmup))
    profiler: Any = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
    threads0 = thread_cpu()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = asyncio.run(drive(app, args.requests))
    cpu_requests = time.process_time() - cpu0
    threads1 = thread_cpu()
    variant.flush()
    cpu_total, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    threads2 = thread_cpu()
    if profiler is not None:
        profiler.stop()
        with open(args.profile, "w", encoding="utf-8") as out:
            out.write(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
    result = {
        "requests": args.requests,
        "ok": ok,
        "warmup": args.warmup,
        "cpu_us_per_request": cpu_total / args.requests * 1e6,
        "cpu_us_per_request_before_flush": cpu_requests / args.requests * 1e6,
        **per_thread(threads0, threads1, threads2, cpu_total, args.requests),
        "wall_s": wall,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
