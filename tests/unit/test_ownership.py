"""What ``setup()`` puts into the process, ``shutdown()`` takes out: the process is left as it was found.

The first test takes the ``opentelemetry-instrument`` path in-process (the configurator's ``setup()``
under the wrapper, the app classes replaced), exports to a closed port, instruments an app, leaves an
import hook waiting and starts the event-loop watchdog, with a console handler on the root logger and
uvicorn's loggers configured as uvicorn configures them; then ``shutdown()``. Each aspect of the process
is compared before and after, and each must have changed in between (else the test would prove nothing).
The Prometheus endpoint's server is stopped by ``shutdown()`` too: its thread ends, its port refuses.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate

from qm_otel import _state
from qm_otel.core.redaction import URL_LOGGERS
from qm_otel.core.sdk_internals import SDK_BATCH_LOGGER
from qm_otel.instrumentation import libraries
from qm_otel.integrations import fastapi as fastapi_integration
from qm_otel.integrations.patches import EXECUTOR_CONTEXT, PATCHES, Patch, PatchSet
from qm_otel.integrations.patches import UVICORN_LOGGERS as UVICORN_LOGGERS_PATCH
from qm_otel.launch.distro import QmOtelConfigurator, QmOtelDistro
from qm_otel.logs.pipeline import UVICORN_LOGGERS
from qm_otel.runtime import event_loop
from qm_otel.testing import reset

#: the variables qm-otel sets when they are unset
SET_BY_QM_OTEL = ("OTEL_SEMCONV_STABILITY_OPT_IN", "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
                  "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "UVICORN_LOG_CONFIG")
NEVER_IMPORTED = "qm_otel_test_never_imported"


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: the atexit callbacks registered since the fixture started and not unregistered (CPython's
#: ``atexit._ncallbacks()`` counts the slots of unregistered ones too, so it cannot tell)
_AT_EXIT: list[Any] = []


def _process() -> dict[str, Any]:
    """Every aspect of the process ``setup()`` may change, by name."""
    import fastapi
    import starlette.applications

    return {
        "threads": frozenset(thread for thread in threading.enumerate() if thread.is_alive()),
        "root logger handlers": list(logging.getLogger().handlers),
        "sys.meta_path": list(sys.meta_path),
        "asyncio.BaseEventLoop.run_in_executor": vars(asyncio.BaseEventLoop)["run_in_executor"],
        "fastapi.FastAPI": fastapi.FastAPI,
        "starlette.applications.Starlette": starlette.applications.Starlette,
        "SIGTERM handler": signal.getsignal(signal.SIGTERM),
        "atexit callbacks": list(_AT_EXIT),
        "os.environ": dict(os.environ),
        "switch interval": sys.getswitchinterval(),
        "global propagator": propagate.get_global_textmap(),
        "SDK batch logger filters": list(logging.getLogger(SDK_BATCH_LOGGER).filters),
        "instrumentor loader filters": list(logging.getLogger(libraries._LOADER_LOGGER).filters),
        "root logger level": logging.getLogger().level,
        "opentelemetry logger level (OTEL_LOG_LEVEL)": logging.getLogger("opentelemetry").level,
        "uvicorn loggers": [(name, list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                             list(logging.getLogger(name).filters)) for name in UVICORN_LOGGERS],
        "HTTP client logger filters": [list(logging.getLogger(name).filters) for name in URL_LOGGERS],
        # the slots filled, and the warn-once register
        "state room": [slot.name for slot in _state._SLOTS if slot.get() is not None] + sorted(_state._SEEN),
    }


def _changed(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """The aspects that differ: name → what is there now (for threads, the ones started since, by name)."""
    changed = {key: value for key, value in now.items() if key != "threads" and value != before[key]}
    started = sorted(thread.name for thread in now["threads"] - before["threads"])
    if started:
        changed["threads"] = started
    return changed


class _LateEntryPoint:
    """An instrumentor entry point whose library is installed but never imported: its hook waits."""

    name = NEVER_IMPORTED
    dist = None

    def load(self) -> Any:
        raise AssertionError("a library that is never imported is never instrumented")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of the test's own (started before the snapshot, stopped after)."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.call_soon_threadsafe(running.stop)
        thread.join()
        running.close()


@pytest.fixture
def configured_logging() -> Iterator[logging.Handler]:
    """A console handler on the root logger (as ``logging.basicConfig``), its level, uvicorn's loggers as uvicorn sets.

    What the test found is put back after it, whatever ``shutdown()`` did.
    """
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in UVICORN_LOGGERS)]
    saved = [(logger, list(logger.handlers), logger.propagate, logger.level) for logger in loggers]
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    root.setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.access"):  # uvicorn's LOGGING_CONFIG: a handler each, not propagating
        logger = logging.getLogger(name)
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.propagate = False
    try:
        yield console
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)


@pytest.fixture
def quiet_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Exports go to a closed port; qm-otel's variables unset, SIGTERM default, Python's switch interval."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_LOG_LEVEL", "critical")  # the SDK's own loggers' level: set by setup(), put back
    sdk_level = logging.getLogger("opentelemetry").level
    for name in SET_BY_QM_OTEL:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / f"{NEVER_IMPORTED}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import requests

    # the OTLP exporters' HTTP client registers atexit callbacks of its own on first import and first
    # connection (weakref.finalize's, once per process): not qm-otel's, so made before the comparison
    with contextlib.suppress(requests.ConnectionError):
        requests.post(endpoint, timeout=5)
    register, unregister = atexit.register, atexit.unregister

    def tracked_register(func: Any, *args: Any, **kwargs: Any) -> Any:
        _AT_EXIT.append(func)
        return register(func, *args, **kwargs)

    def tracked_unregister(func: Any) -> None:
        _AT_EXIT[:] = [registered for registered in _AT_EXIT if registered != func]
        unregister(func)

    _AT_EXIT.clear()
    monkeypatch.setattr(atexit, "register", tracked_register)
    monkeypatch.setattr(atexit, "unregister", tracked_unregister)
    sigterm = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        yield
    finally:
        reset()
        logging.getLogger("opentelemetry").setLevel(sdk_level)
        signal.signal(signal.SIGTERM, sigterm)
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("quiet_process")
def test_setup_then_shutdown_leaves_the_process_as_it_was(
    loop: asyncio.AbstractEventLoop, configured_logging: logging.Handler
) -> None:
    before = _process()

    QmOtelConfigurator().configure()  # as opentelemetry-instrument: setup() under the wrapper, the app classes
    telemetry = _state.PIPELINE.get()
    assert telemetry is not None
    QmOtelDistro().load_instrumentor(_LateEntryPoint(), skip_dep_check=True)  # waits for an import never made
    import fastapi

    app = fastapi.FastAPI()  # the replaced class instruments it
    assert app in fastapi_integration._APPS

    async def start_watchdog() -> None:
        event_loop.ensure_started()

    asyncio.run_coroutine_threadsafe(start_watchdog(), loop).result(timeout=30)
    logging.getLogger("test").warning("a record for the log delivery")
    telemetry.force_flush(30)  # the deliveries' senders start (and find the collector down)
    during = _process()
    assert event_loop.THREAD_NAME in {thread.name for thread in during["threads"]}
    assert configured_logging not in during["root logger handlers"]  # taken off: no line printed twice
    not_changed = sorted(set(before) - set(_changed(before, during)))
    assert not_changed == [], "setup() changed none of these: the comparison after shutdown() proves nothing"

    telemetry.shutdown(timeout_s=10)

    assert _changed(before, _process()) == {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.usefixtures("quiet_process")
def test_shutdown_stops_the_prometheus_endpoint() -> None:
    import qm_otel

    port = _free_port()
    before = set(threading.enumerate())
    telemetry = qm_otel.setup(service_name="ownership", metrics_exporter="prometheus", prometheus_host="127.0.0.1",
                              prometheus_port=port, prometheus_ports=1)
    serving = [thread for thread in set(threading.enumerate()) - before if "serve_forever" in thread.name]
    assert serving, "no thread serves /metrics: the test would prove nothing"
    assert not _refused(port)

    telemetry.shutdown(timeout_s=10)

    assert not any(thread.is_alive() for thread in serving)
    assert _refused(port)


@pytest.mark.usefixtures("quiet_process", "configured_logging")
def test_a_log_config_file_is_taken_off_the_root_logger_at_shutdown() -> None:
    """``log_config``'s dictConfig replaces the root logger's handlers: shutdown() puts back the ones it found."""
    import qm_otel
    from qm_otel.logs.pipeline import LOGGING_CONFIG

    root = logging.getLogger()
    before = list(root.handlers), root.level
    telemetry = qm_otel.setup(service_name="ownership", log_config=str(LOGGING_CONFIG))
    configured = list(root.handlers)
    assert not set(configured) & set(before[0])

    telemetry.shutdown(timeout_s=10)

    assert (list(root.handlers), root.level) == before
    assert not any(handler in root.handlers for handler in configured)


def test_a_later_setup_call_reroutes_uvicorn_and_shutdown_puts_back_what_each_call_found() -> None:
    """uvicorn's dictConfig runs between two setup() calls: shutdown() leaves uvicorn's configuration, not the first."""
    from qm_otel.core.config import resolve_settings
    from qm_otel.logs.pipeline import route_uvicorn_loggers

    settings = resolve_settings({"request_log": True}, {})
    logger = logging.getLogger("uvicorn.access")
    saved = list(logger.handlers), logger.propagate, list(logger.filters)
    users, uvicorns = logging.NullHandler(), logging.NullHandler()
    logger.handlers[:] = [users]
    logger.propagate = False
    patched = PatchSet()
    try:
        patched.adopt(UVICORN_LOGGERS_PATCH, route_uvicorn_loggers(settings))
        assert (logger.handlers, logger.propagate) == ([], True)
        assert logger.filters
        logger.addHandler(uvicorns)  # uvicorn's dictConfig: its handler, no propagation (the filter survives)
        logger.propagate = False
        patched.adopt(UVICORN_LOGGERS_PATCH, route_uvicorn_loggers(settings))
        assert (logger.handlers, logger.propagate) == ([], True)
        patched.undo()
        assert (logger.handlers, logger.propagate, logger.filters) == ([uvicorns], False, saved[2])
    finally:
        logger.handlers[:], logger.propagate, logger.filters[:] = saved


def test_shutdown_undoes_only_what_is_still_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable the user set stays; one changed since, or a method replaced over qm-otel's, is left alone."""
    monkeypatch.setenv("QM_OTEL_TEST_USERS", "theirs")
    monkeypatch.delenv("QM_OTEL_TEST_OURS", raising=False)
    monkeypatch.delenv("QM_OTEL_TEST_CHANGED", raising=False)
    original = vars(asyncio.BaseEventLoop)["run_in_executor"]
    patched = PatchSet()
    try:
        assert not patched.set_default("QM_OTEL_TEST_USERS", "ours")
        assert patched.set_default("QM_OTEL_TEST_OURS", "ours")
        assert patched.set_default("QM_OTEL_TEST_CHANGED", "ours")
        os.environ["QM_OTEL_TEST_CHANGED"] = "changed since"
        assert patched.apply(EXECUTOR_CONTEXT)
        ours = vars(asyncio.BaseEventLoop)["run_in_executor"]

        def over_ours(*args: Any) -> Any:  # another library's patch, applied after qm-otel's
            return ours(*args)

        setattr(asyncio.BaseEventLoop, "run_in_executor", over_ours)  # noqa: B010
        patched.undo()
        assert os.environ["QM_OTEL_TEST_USERS"] == "theirs"
        assert "QM_OTEL_TEST_OURS" not in os.environ
        assert os.environ["QM_OTEL_TEST_CHANGED"] == "changed since"
        assert vars(asyncio.BaseEventLoop)["run_in_executor"] is over_ours
    finally:
        setattr(asyncio.BaseEventLoop, "run_in_executor", original)  # noqa: B010


def test_a_patch_applied_elsewhere_is_not_applied_through_a_patch_set() -> None:
    elsewhere = [patch for patch in PATCHES if patch.install is None]
    assert elsewhere
    for patch in elsewhere:
        with pytest.raises(ValueError, match=r"not by PatchSet\.apply"):
            PatchSet().apply(patch)
    assert all(isinstance(patch, Patch) and patch.why and patch.undone and patch.applied_by for patch in PATCHES)


def test_run_in_executor_carries_the_callers_context_while_patched() -> None:
    import contextvars

    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="unset")

    async def in_executor() -> str:
        variable.set("caller")
        return await asyncio.get_running_loop().run_in_executor(None, variable.get)

    patched = PatchSet()
    patched.apply(EXECUTOR_CONTEXT)
    try:
        assert asyncio.run(in_executor()) == "caller"
    finally:
        patched.undo()
    assert asyncio.run(in_executor()) == "unset"
