"""Debian's Prometheus, started by a test on 127.0.0.1 with the rules and scrape targets it gives."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.service import free_port, launch

PROMETHEUS = shutil.which("prometheus")


@contextlib.contextmanager
def prometheus_server(directory: Path, rule_files: list[str], scrape_configs: list[dict[str, Any]]) -> Iterator[str]:
    """Prometheus scraping and evaluating every second, its data under ``directory``; yield its URL.

    Stopped as a test's service is (:meth:`tests.support.service.Service.__exit__`): its log is shown if the
    block fails.
    """
    if PROMETHEUS is None:
        message = "prometheus is not installed (scripts/install test installs the Debian package)"
        raise AssertionError(message)
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": scrape_configs,
    }))
    command = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]
    with launch(command, port, dict(os.environ)):
        yield f"http://127.0.0.1:{port}"


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector (the API answered ``success``)."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])
