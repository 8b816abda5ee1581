"""Attach qm-otel's handlers to the root logger, exactly once, and route uvicorn's loggers into them.

The root logger gets one :class:`~qm_otel.logs.handler.TelemetryHandler`, which writes each record
to stdout and exports it over OTLP (the record ``opentelemetry-instrumentation-logging``'s handler
would make: the trace and span IDs of the context that wrote it) in one pass, and, opt-in, a
rotating file. All are tagged, so installing again
first removes the old ones: there is never a duplicate line. Alternatively a dictConfig JSON file
(``log_config``; the packaged ``logging.json`` is one) configures the same, and serves as uvicorn's
``--log-config`` too.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.config
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from opentelemetry import _logs
from opentelemetry.sdk._logs import LoggerProvider

from qm_otel.core.config import ConfigError, Settings
from qm_otel.core.correlation import correlation_id, exception_correlation_id
from qm_otel.logs.files import RotatingGzipFileHandler
from qm_otel.logs.formatters import JsonFormatter, PipeFormatter, TextFormatter
from qm_otel.logs.handler import LogLane, TelemetryHandler

__all__ = [
    "LOGGING_CONFIG",
    "UVICORN_LOGGERS",
    "UVICORN_LOG_CONFIG",
    "CorrelationFilter",
    "OtlpHandler",
    "RootHandlers",
    "check_log_file",
    "direct_handler",
    "install_root_handlers",
    "remove_log_handlers",
    "route_uvicorn_loggers",
]

#: A ``dictConfig`` JSON file for ``uvicorn --log-config``: uvicorn's loggers keep no handlers of
#: their own and propagate to the root logger, so their lines go through qm-otel's pipeline.
UVICORN_LOG_CONFIG = Path(__file__).with_name("uvicorn.json")
#: A complete ``dictConfig`` JSON file (OTLP + JSON stdout, uvicorn routed): ``log_config`` and
#: ``uvicorn --log-config`` can both point at it, or at a copy of it.
LOGGING_CONFIG = Path(__file__).with_name("logging.json")
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
#: the handlers qm-otel installed (weak: nothing is written on the handler objects)
_OURS: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


class CorrelationFilter(logging.Filter):
    """Adds ``correlation_id`` to records written while a correlation is active (never drops one).

    Set on the record, it reaches stdout as a field and the OTLP export as an attribute, so Loki
    holds it as structured metadata.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the field when a correlation is active and the record has none."""
        if "correlation_id" not in record.__dict__:
            value = correlation_id()
            if value is None and record.exc_info:  # a crash report written after its request ended
                value = exception_correlation_id(record.exc_info[1])
            if value is not None:
                record.correlation_id = value
        return True


class _DropAccessLog(logging.Filter):
    """Drops uvicorn's access lines: qm-otel's request log replaces them (no query strings, route templates)."""

    def filter(self, record: logging.LogRecord) -> bool:
        del record
        return False


class OtlpHandler(TelemetryHandler):
    """Exports records over OTLP through the global logger provider, writing no line: for dictConfig files."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(None, _logs.get_logger_provider())  # type: ignore[arg-type]  # the API provider will do
        self.setLevel(level)


_CORRELATION_FILTER = CorrelationFilter()
_ACCESS_FILTER = _DropAccessLog()


def _tag(handler: logging.Handler) -> logging.Handler:
    _OURS.add(handler)
    handler.addFilter(_CORRELATION_FILTER)
    return handler


def _foreign_otel_handler(handler: logging.Handler) -> bool:
    """A log handler installed by someone else that already exports to OTel (avoid doubles)."""
    return type(handler).__name__ == "LoggingHandler" and type(handler).__module__.startswith("opentelemetry")


def _formatter(name: str, settings: Settings) -> logging.Formatter:
    if name == "json":
        return JsonFormatter(settings.service_name, code_location=settings.log_code_location)
    if name == "pipe":
        return PipeFormatter()
    return TextFormatter()


def route_uvicorn_loggers(settings: Settings) -> Callable[[], None] | None:
    """Make uvicorn's loggers propagate to the root logger instead of printing their own format.

    With the request log on, uvicorn's access lines are dropped (a filter survives the
    ``dictConfig`` uvicorn runs at start-up; handlers and levels do not). Returns what puts back the
    handlers, ``propagate`` flags and access filter it changed (None when it changed nothing): a
    logger gets its handlers back only if it still has none, its flag only if it still propagates,
    so what uvicorn or the application configured since stays.
    """
    changed: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        handlers = list(logger.handlers)
        for handler in handlers:
            logger.removeHandler(handler)
        if handlers or not logger.propagate:
            changed.append((logger, handlers, logger.propagate))
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    filtered = _ACCESS_FILTER in access.filters
    access.removeFilter(_ACCESS_FILTER)
    if settings.request_log:
        access.addFilter(_ACCESS_FILTER)
    if not changed and filtered == settings.request_log:
        return None

    def undo() -> None:
        if filtered != settings.request_log and (_ACCESS_FILTER in access.filters) == settings.request_log:
            (access.addFilter if filtered else access.removeFilter)(_ACCESS_FILTER)
        for logger, handlers, propagate in changed:
            if not logger.handlers:
                for handler in handlers:
                    logger.addHandler(handler)
            if logger.propagate:
                logger.propagate = propagate

    return undo


def _from_file(path: str) -> None:
    """Apply a dictConfig JSON file; the root handlers it lists replace the current ones."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        logging.config.dictConfig(config)
    except (OSError, ValueError, TypeError, AttributeError, ImportError) as exc:
        message = (f"qm-otel setting 'log_config' got {path!r}, which could not be applied "
                   f"({type(exc).__name__}: {exc}); allowed: a readable logging dictConfig JSON file")
        raise ConfigError(message) from exc


def direct_handler(logger: logging.Logger) -> TelemetryHandler | None:
    """qm-otel's handler, when it alone would see a record of ``logger`` (one of qm-otel's own loggers).

    That is: the root logger's only handler is qm-otel's (its only filter the correlation filter, its
    line JSON or none), the root has no filter, ``logger`` and its parents below the root have no
    handler or filter and propagate, and no record factory was installed. Then the handler may write
    the record from its fields (:meth:`~qm_otel.logs.handler.TelemetryHandler.write_fields`); else the
    caller logs it through ``logging``, so a handler or filter a user attached sees it.
    """
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or root.filters or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    handler = handlers[0]
    if type(handler) is not TelemetryHandler or handler.filters != [_CORRELATION_FILTER] or (
            not handler.writes_directly):
        return None
    current: logging.Logger | None = logger
    while current is not None and current is not root:
        if current.handlers or current.filters or not current.propagate or current.disabled:
            return None
        current = current.parent
    return handler


class RootHandlers(NamedTuple):
    """What :func:`install_root_handlers` put on the root logger, and what puts the root logger back."""

    #: qm-otel's handlers (the stdout/OTLP one, the file), tagged
    handlers: list[logging.Handler]
    #: removes and closes the handlers it added; if they are still on the root logger, puts back the
    #: ones it took off where they were, and the level if it is still qm-otel's
    undo: Callable[[], None]


def install_root_handlers(
    settings: Settings, logger_provider: LoggerProvider | None, lane: LogLane | None = None
) -> RootHandlers:
    """Install qm-otel's handlers on the root logger (the OTel one only when ``logger_provider`` is given).

    ``lane``: where the handler hands records to OTLP without the SDK's per-record objects. Console
    handlers set up before it are taken off (each record is written once) and the level set;
    ``setup()`` keeps the undo for ``shutdown()``, beside those of :func:`route_uvicorn_loggers` and
    :func:`~qm_otel.core.redaction.redact_logged_urls`.

    What it changed is undone if it fails half-way.
    """
    root = logging.getLogger()
    remove_log_handlers([h for h in root.handlers if h in _OURS])
    before, level_before = list(root.handlers), root.level
    handlers: list[logging.Handler] = []
    added: list[logging.Handler] = []

    def undo() -> None:
        in_place = any(handler in root.handlers for handler in added)
        remove_log_handlers(added)
        taken = [handler for handler in before if handler not in after]
        if in_place and taken:
            current = list(root.handlers)
            root.handlers = [h for h in before if h in current or h in taken] + [h for h in current if h not in before]
        if root.level == level_after:
            root.setLevel(level_before)

    after, level_after = before, level_before
    try:
        _install_root(settings, logger_provider, lane, root, handlers)
    except BaseException:
        after, level_after = list(root.handlers), root.level
        added[:] = [handler for handler in after if handler not in before]
        undo()
        raise
    after, level_after = list(root.handlers), root.level
    added[:] = [handler for handler in after if handler not in before]
    return RootHandlers(handlers, undo)


def _install_root(
    settings: Settings, logger_provider: LoggerProvider | None, lane: LogLane | None, root: logging.Logger,
    handlers: list[logging.Handler],
) -> None:
    replaced: list[logging.Handler] = []
    if settings.log_config is not None:
        _from_file(settings.log_config)
        for handler in root.handlers:
            handler.addFilter(_CORRELATION_FILTER)
    else:
        exporting = logger_provider is not None and not any(_foreign_otel_handler(h) for h in root.handlers)
        writing = settings.stdout_format != "none"
        replaced = _console_handlers(root) if writing else []
        for handler in replaced:
            root.removeHandler(handler)
        if exporting or writing:  # one handler, one pass per record: the stdout line and the OTLP record
            handlers.append(TelemetryHandler(
                _formatter(settings.stdout_format, settings) if writing else None,
                logger_provider if exporting else None,
                sys.stdout,
                code_location=settings.log_code_location,
                lane=lane,
            ))
        root.setLevel(settings.log_level)
    if settings.log_file is not None:
        file_handler = RotatingGzipFileHandler(
            settings.log_file,
            max_bytes=settings.log_file_max_bytes,
            backups=settings.log_file_backups,
            max_age_days=settings.log_file_max_age_days,
        )
        file_handler.setFormatter(_formatter(settings.log_file_format, settings))
        handlers.append(file_handler)
    for handler in handlers:
        root.addHandler(_tag(handler))
    if replaced:
        logging.getLogger("qm_otel").info(
            "qm-otel replaced the root logger's console handler(s) %s (set up before it, e.g. by "
            "logging.basicConfig): each record is now written once, by qm-otel, until shutdown(); handlers "
            "writing elsewhere are kept", ", ".join(_describe(h) for h in replaced))


def _console_handlers(root: logging.Logger) -> list[logging.Handler]:
    """The root's handlers that print to this process's stdout or stderr (not qm-otel's, not files)."""
    found = []
    for handler in root.handlers:
        if handler in _OURS or isinstance(handler, logging.FileHandler):
            continue
        stream = getattr(handler, "stream", None) if isinstance(handler, logging.StreamHandler) else None
        if stream is None:
            continue
        try:
            console = stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) or stream.fileno() in (1, 2)
        except (AttributeError, OSError, ValueError):  # a stream without a file descriptor (StringIO)
            console = False
        if console:
            found.append(handler)
    return found


def _describe(handler: logging.Handler) -> str:
    stream = getattr(handler, "stream", None)
    name = getattr(stream, "name", "?")
    return f"{type(handler).__name__}({name})"


def check_log_file(settings: Settings) -> None:
    """Fail set-up, naming the setting, when ``log_file`` cannot be created or appended to (before anything runs)."""
    path = settings.log_file
    if path is None:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = f"{errno.errorcode.get(exc.errno or 0, type(exc).__name__)}: {exc.strerror or exc}"
        message = (f"qm-otel setting 'log_file' (QM_OTEL_LOG_FILE or log_file=) got {path!r}, which cannot be "
                   f"written ({reason}); allowed: a file in a directory this process can create and write")
        raise ConfigError(message, setting="log_file") from exc


def remove_log_handlers(handlers: list[logging.Handler]) -> None:
    """Detach and close handlers installed by :func:`install_root_handlers`."""
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
