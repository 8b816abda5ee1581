"""The ``opentelemetry-instrument`` entry points: qm-otel as the OTel distro and configurator.

``opentelemetry-instrument uvicorn app:app`` runs, in order: :meth:`QmOtelDistro.configure`,
:meth:`QmOtelConfigurator.configure` (which calls :func:`qm_otel.setup`, so both launch paths
build the same telemetry, and makes every FastAPI or Starlette app instrument itself when it is
created) and then each installed instrumentor through :meth:`QmOtelDistro.load_instrumentor`
(:mod:`qm_otel.instrumentation.libraries`, which ``setup()`` in code uses the same way).

What the configurator changes beyond ``setup()`` (the app classes, ``UVICORN_LOG_CONFIG``) it
applies through the pipeline's :class:`~qm_otel.integrations.patches.PatchSet`, so ``shutdown()``
undoes it with the rest; all of it runs before the wrapped program (uvicorn) starts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

import qm_otel
from qm_otel import _state
from qm_otel.core.config import ConfigError
from qm_otel.instrumentation import libraries
from qm_otel.integrations.patches import APP_CLASSES
from qm_otel.logs.pipeline import UVICORN_LOG_CONFIG

__all__ = ["QmOtelConfigurator", "QmOtelDistro", "process_role"]

class QmOtelDistro(BaseDistro):  # type: ignore[misc]
    """Hands the other instrumentors qm-otel's providers."""

    def _configure(self, **kwargs: Any) -> None:
        """Nothing: the configurator sets qm-otel's defaults once ``setup()`` built the pipeline that owns them."""
        del kwargs

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Instrument the entry point's library with qm-otel's providers, now or when it is first imported.

        (:func:`qm_otel.instrumentation.libraries.instrument_on_import`.) Nothing when telemetry is off in this
        process (a bad setting, multiprocessing's helpers).
        """
        if _state.PIPELINE.get() is None:
            return
        libraries.instrument_on_import(entry_point, **kwargs)


def _serve(telemetry: qm_otel.Telemetry) -> None:
    """What the wrapped program gets beyond ``setup()``; the pipeline's ``shutdown()`` undoes it.

    - uvicorn reads ``UVICORN_LOG_CONFIG`` as ``--log-config``: its loggers then propagate into
      qm-otel's pipeline instead of printing their own format (or the same dictConfig file
      ``setup()`` applies, when ``QM_OTEL_LOG_CONFIG`` names one); a value the user set stays.
    - every FastAPI or Starlette app created from now on gets :func:`qm_otel.instrument_app`:
      ``fastapi.FastAPI`` and ``starlette.applications.Starlette`` are replaced by subclasses whose
      constructor instruments the app (:data:`~qm_otel.integrations.patches.APP_CLASSES`).
    """
    telemetry.patches.set_default("UVICORN_LOG_CONFIG", os.environ.get("QM_OTEL_LOG_CONFIG") or str(UVICORN_LOG_CONFIG))
    for patch in APP_CLASSES:
        telemetry.patches.apply(patch)


#: ``python -c`` helpers multiprocessing starts, which run no application code
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _option(argv: list[str], *names: str) -> str | None:
    """The value of ``--name value`` / ``--name=value`` / ``-n value`` in ``argv``, if given."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.partition("=")[2]
    return None


def _many(value: str | None) -> bool:
    try:
        return value is not None and int(value) > 1
    except ValueError:
        return False


def process_role(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> str:
    """What this process is, from its command line: ``"worker"``, ``"supervisor"`` or ``"helper"``.

    - a helper (multiprocessing's resource tracker, the fork server) runs no application code;
    - a supervisor starts the processes that serve: gunicorn's master (its workers are forked from
      it), uvicorn with ``--workers`` above 1 or ``--reload`` (its workers are new interpreters);
    - anything else serves (uvicorn's spawned workers run ``multiprocessing.spawn``: workers).
    """
    argv = list(sys.orig_argv if argv is None else argv)
    environ = dict(os.environ if environ is None else environ)
    code = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else ""  # python [-B …] -c CODE
    if any(helper in code for helper in _HELPERS):
        return "helper"
    if "multiprocessing.spawn" in code or "--multiprocessing-fork" in argv:
        return "worker"
    program = next((os.path.basename(a) for a in argv[:3] if not a.startswith("-") and "python" not in
                    os.path.basename(a)), "")
    if program in ("gunicorn", "gunicorn.app.wsgiapp"):
        return "supervisor"
    if program in ("uvicorn", "uvicorn.main"):
        workers = _option(argv, "--workers") or environ.get("UVICORN_WORKERS") or environ.get("WEB_CONCURRENCY")
        reload = "--reload" in argv or environ.get("UVICORN_RELOAD", "").lower() in ("1", "true", "yes")
        if _many(workers) or reload:
            return "supervisor"
    return "worker"


class QmOtelConfigurator:
    """The ``opentelemetry_configurator`` entry point: delegates to :func:`qm_otel.setup`."""

    def configure(self, **kwargs: Any) -> None:
        """Called once by ``opentelemetry-instrument``: set up, then instrument every app made from now on.

        Only processes that serve export: a supervisor (gunicorn's master, uvicorn's ``--workers``
        or ``--reload`` process) writes its own log lines to stdout and exports nothing, and a
        gunicorn worker forked from it sets the full pipeline up as it starts; multiprocessing's
        helpers get nothing at all. A log file that cannot be written does not stop the service:
        one line on stderr says so and logs go to stdout (and OTLP) only.
        """
        del kwargs
        role = process_role()
        if role == "helper":
            return
        with libraries.loaded_by_wrapper():  # the wrapper loads the instrumentors itself, next
            if role == "supervisor":
                telemetry = _setup_or_say_why(traces_exporter="none", metrics_exporter="none", logs_exporter="none")
                if telemetry is not None:
                    # once per process (an at-fork hook cannot be unregistered); it does nothing after shutdown()
                    os.register_at_fork(after_in_child=_become_worker)
            else:
                telemetry = _setup_or_say_why()
        if telemetry is not None:
            _serve(telemetry)


def _setup_or_say_why(**options: Any) -> qm_otel.Telemetry | None:
    """``setup()``; a bad setting is one line on stderr, then no telemetry (or exit 2). The handle, if set up.

    A log file that cannot be written only costs the file: logs go to stdout (and OTLP).
    """
    try:
        try:
            return qm_otel.setup(**options)
        except ConfigError as exc:
            if exc.setting != "log_file":
                raise
            print(f"qm-otel: {exc}; logging to stdout only", file=sys.stderr, flush=True)
            return _setup_without_log_file(**options)
    except ConfigError as exc:
        if os.environ.get("QM_OTEL_ON_CONFIG_ERROR", "").strip().lower() == "exit":
            print(f"qm-otel: {exc}; stopping (QM_OTEL_ON_CONFIG_ERROR=exit)", file=sys.stderr, flush=True)
            os._exit(2)  # from sitecustomize, before the application: nothing else to clean up
        print(f"qm-otel: {exc}; telemetry is off for this process "
              "(QM_OTEL_ON_CONFIG_ERROR=exit stops it instead)", file=sys.stderr, flush=True)
        return None


def _become_worker() -> None:
    """In a process forked from a supervisor (a gunicorn worker): the full pipeline, exporters on.

    Nothing when the supervisor's pipeline was shut down before the fork.
    """
    if _state.PIPELINE.get() is None:
        return
    qm_otel.shutdown(timeout_s=1)  # the supervisor's, with what it patched (undone in this process only)
    telemetry = _setup_or_say_why()
    if telemetry is not None:
        _serve(telemetry)


def _setup_without_log_file(**options: Any) -> qm_otel.Telemetry:
    """``setup()`` with ``QM_OTEL_LOG_FILE`` removed from this process's environment.

    It stays removed, even after ``shutdown()`` (the one variable qm-otel removes rather than sets):
    an application that calls ``setup()`` itself then resolves the same settings (no second error,
    no "other settings" warning), and so do the workers it starts.
    """
    os.environ.pop("QM_OTEL_LOG_FILE", None)
    return qm_otel.setup(**options)
