"""Polling a real process until it shows what a test waits for."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import httpx


def _describe(check: Callable[[], Any]) -> str:
    try:
        return inspect.getsource(check).strip()
    except (OSError, TypeError):
        return repr(check)


def wait_for(check: Callable[[], Any], what: str | None = None, timeout_s: float = 60) -> Any:
    """``check()``'s first truthy result; an HTTP error or a failed assertion counts as not yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (httpx.HTTPError, AssertionError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what or _describe(check)}")
        time.sleep(0.25)
