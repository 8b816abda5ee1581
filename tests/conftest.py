"""Shared fixtures, and the ``integration`` marker put on every test under tests/integration/.

``pytest -m "not integration"`` runs the fast tests alone: no process started, no server but threads
in the test process. A test elsewhere that starts a process (uvicorn, promtool, amtool, node, Python)
carries ``@pytest.mark.integration`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.otlp_receiver import OtlpReceiver

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from tests/integration/ ``integration`` (the modules need not say so)."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver on a free 127.0.0.1 port, stopped after the test."""
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()
