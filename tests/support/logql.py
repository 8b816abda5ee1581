"""Grafana's LogQL grammar (npm package @grafana/lezer-logql), which parses the stack's LogQL in the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the grammar Grafana's query editor uses, at the version scripts/install puts in .cache/npm-logql
LOGQL_GRAMMAR = "@grafana/lezer-logql@0.4.2"


def grammar_dir() -> Path:
    """The directory whose node_modules hold the grammar (installed here if scripts/install did not).

    Without node and npm the calling test is skipped, except in CI (``CI`` set), where it fails.
    """
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed to parse LogQL with Grafana's grammar")
        pytest.skip("node/npm not installed")
    where = ROOT / ".cache/npm-logql"
    if not (where / "node_modules/@grafana/lezer-logql").is_dir():
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(where), LOGQL_GRAMMAR],
                       check=True, capture_output=True, timeout=600)
    return where
