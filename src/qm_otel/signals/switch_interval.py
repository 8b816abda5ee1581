"""The interpreter's thread switch interval while qm-otel's export threads run.

The batch processors export from their own threads. When the request thread is busy (Python
code, no I/O), an export thread that comes back from a socket call waits for the GIL until the
switch interval forces a hand-over: 5 ms by default, at every one of the several socket calls an
export makes. Measured in-process at full speed on 2 cores, the exporters then fell so far behind
that the queues overflowed (8,704 of 15,300 spans and 5,630 of 15,300 application records reached
the sink); with a 0.5 ms interval all of them did, and under ``wrk`` p99 fell from 55 to 40 ms at
the same requests/s. The interval only matters while two threads want the GIL, so an application
that runs one busy thread is not slowed.

The interval is process-wide, so qm-otel changes it only while its exporters run and puts the
previous value back at shutdown; an interval the application set itself (anything but Python's
5 ms default) is left alone unless ``switch_interval_ms`` is set explicitly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from qm_otel.core.config import Settings

__all__ = ["PYTHON_DEFAULT_S", "shorten_switch_interval"]

#: CPython's default ``sys.getswitchinterval()``
PYTHON_DEFAULT_S = 0.005
_logger = logging.getLogger("qm_otel")


def _restore_nothing() -> None:
    """Nothing was changed."""


def shorten_switch_interval(settings: Settings) -> Callable[[], None]:
    """Apply ``switch_interval_ms`` when an exporter runs; a callable that restores the previous interval."""
    wanted_ms = settings.switch_interval_ms
    exporting = bool(settings.traces_exporter) or bool(settings.logs_exporter)
    if wanted_ms is None or not exporting:
        return _restore_nothing
    previous = sys.getswitchinterval()
    if abs(previous - PYTHON_DEFAULT_S) > 1e-9 and "switch_interval_ms" not in settings.explicit:
        _logger.debug("qm-otel: keeping the application's switch interval of %s s", previous)
        return _restore_nothing
    wanted = wanted_ms / 1000
    sys.setswitchinterval(wanted)

    def restore() -> None:
        if abs(sys.getswitchinterval() - wanted) < 1e-9:  # nobody changed it since
            sys.setswitchinterval(previous)

    return restore
