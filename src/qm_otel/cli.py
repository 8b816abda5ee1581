"""The ``qm-otel`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qm-otel`` console script."""
    parser = argparse.ArgumentParser(prog="qm-otel", description="qm-otel: OpenTelemetry for Python web services")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo service, drive traffic and show its telemetry")
    demo.add_argument("--app", default="examples.demo_service:app", help="import string of the app to serve")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from qm_otel.demo import run_demo

        return run_demo(args.app)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    raise SystemExit(main())
