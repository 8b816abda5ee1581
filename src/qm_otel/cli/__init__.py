"""The ``qm-otel`` command: demo, render, check, logs — the tooling wing; the runtime never imports it.

Its third-party needs (rich, PyYAML, uvicorn) come with the ``qm-otel[cli]`` extra; a command
run without them says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CLI_EXTRA_MODULES", "main"]

#: what the ``cli`` extra installs for these commands (the runtime needs none of it)
CLI_EXTRA_MODULES = frozenset({"rich", "yaml", "uvicorn"})


def _render(args: argparse.Namespace) -> int:
    from qm_otel.cli.render import stale, write

    root = Path(args.root)
    if not _is_checkout(root):
        print(f"qm-otel render works in a qm-otel checkout (a directory with its pyproject.toml and dashboards/); "
              f"{root.resolve()} is not one: run it there, or pass --root", file=sys.stderr)
        return 2
    if args.check:
        outdated = stale(root)
        for path in outdated:
            print(f"stale: {path} (run `qm-otel render`)", file=sys.stderr)
        return 1 if outdated else 0
    for path in write(root):
        print(f"wrote {path}")
    return 0


def _is_checkout(root: Path) -> bool:
    """Whether ``root`` is a qm-otel source checkout (what ``render`` writes into)."""
    try:
        project = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return 'name = "qm-otel"' in project and (root / "dashboards").is_dir()


def _check(args: argparse.Namespace) -> int:
    from qm_otel.cli.stack import check_endpoints, default_endpoints

    endpoints = default_endpoints(args.host)
    for name in args.skip or ():
        endpoints.pop(name, None)
    results = check_endpoints(endpoints, timeout_s=args.timeout)
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        print(f"{mark} {result.name:<15} {result.url:<45} {result.detail}")
    return 0 if all(r.ok for r in results) else 1


def _logs(args: argparse.Namespace) -> int:
    from qm_otel.cli.loki import LokiClient, LokiError, print_correlation_logs

    try:
        with LokiClient(args.loki, timeout_s=args.timeout) as client:
            return print_correlation_logs(client, args.correlation_id, since=args.since, limit=args.limit,
                                          grafana=args.grafana)
    except LokiError as exc:
        print(f"qm-otel logs: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qm-otel`` console script."""
    parser = argparse.ArgumentParser(prog="qm-otel", description="qm-otel: OpenTelemetry for Python web services")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo service, drive traffic and show its telemetry")
    demo.add_argument("--app", default="qm_otel.cli.demo_service:app", help="import string of the app to serve")
    render = commands.add_parser("render", help="generate dashboards and alert rules from the conventions")
    render.add_argument("--root", default=".", help="the repository root (default: current directory)")
    render.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    check = commands.add_parser("check", help="probe the collector, Loki, Tempo, Prometheus and Grafana")
    check.add_argument("--host", default="127.0.0.1", help="where the stack's ports are published")
    check.add_argument("--skip", action="append", help="leave out an endpoint by name (repeatable)")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds per probe")
    logs = commands.add_parser("logs", help="a correlation ID's log lines from Loki, with the Tempo link")
    logs.add_argument("correlation_id")
    logs.add_argument("--loki", default="http://127.0.0.1:3100", help="Loki base URL")
    logs.add_argument("--grafana", default="http://127.0.0.1:3000", help="Grafana base URL for the trace link")
    logs.add_argument("--since", default="24h", help="how far back to look (Loki duration, e.g. 1h, 7d)")
    logs.add_argument("--limit", type=int, default=500)
    logs.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from qm_otel.cli.demo import run_demo

            return run_demo(args.app)
        return {"render": _render, "check": _check, "logs": _logs}[args.command](args)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in CLI_EXTRA_MODULES:
            raise
        print(f"qm-otel {args.command} needs the 'cli' extra ({missing} is not installed): "
              "pip install 'qm-otel[cli]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
