"""The libraries a service uses: every installed OpenTelemetry instrumentation, on both launch paths.

``opentelemetry-instrument`` loads each ``opentelemetry_instrumentor`` entry point whose library is
installed (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ones to skip, ``*`` skips all) and hands
it to the distro's ``load_instrumentor``; qm-otel's distro hands it on to :func:`instrument`. In
code, ``qm_otel.setup()`` walks the same entry points by the same rules
(:func:`instrument_installed`). Either way:

- what qm-otel wires itself is skipped (:data:`WIRED_BY_SETUP`);
- a library installed at a version its instrumentation declines (SQLAlchemy 2.1 with the contrib
  instrumentation 0.66b1) is named in one WARNING line, ``qm-otel: not instrumenting sqlalchemy 2.1.0:
  opentelemetry-instrumentation-sqlalchemy 0.66b1 supports sqlalchemy >= 1.0.0, < 2.1.0``, on both
  launch paths (under the wrapper, instead of its loader's ERROR);
- each instrumentor gets qm-otel's providers, its spans through :class:`SanitizingTracerProvider`: a
  statement a database instrumentation records (``db.statement``, ``db.query.text``) keeps its
  shape and loses its values (:func:`qm_otel.core.redaction.sanitize_statement`);
- a library that is not imported yet is instrumented when it is first imported
  (:func:`call_when_imported`), with the pipeline in force then: a service does not pay at start-up
  for the libraries it never imports (about 0.5 s here for SQLAlchemy, psycopg and requests), and
  an engine or client made after the import is traced, whenever ``setup()`` ran;
- ``shutdown()`` returns each library qm-otel instrumented to itself (:meth:`Instrumentation.close`): no
  spans, metrics or propagation headers once telemetry is off, and nothing waits for an import; a
  later ``setup()`` (or a gunicorn worker forked from its master) instruments them again with the new
  providers.

What one pipeline instrumented, and what it waits for, is its :class:`Instrumentation`: the
``Telemetry`` handle owns it and ``shutdown()`` closes it; while the pipeline runs, the state room's
:data:`INSTRUMENTATION` slot holds it for the launch paths and integrations that add to it. The
import hook is qm-otel's own ``sys.meta_path`` finder, removed at ``shutdown()``:
``wrapt.when_imported`` keeps its finder and hooks for the life of the process
(docs/decisions/import-hook.md).

A library instrumented before ``setup()`` by the application itself is left as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, version
from types import ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

from qm_otel import _state
from qm_otel.core.redaction import sanitize_statement
from qm_otel.core.sdk_internals import entry_points
from qm_otel.runtime import process_metrics

__all__ = [
    "INSTRUMENTATION",
    "WIRED_BY_SETUP",
    "Instrumentation",
    "SanitizingTracerProvider",
    "call_when_imported",
    "instrument",
    "instrument_installed",
    "instrument_on_import",
    "instrumented",
    "loaded_by_wrapper",
    "reinstrument",
]

_logger = logging.getLogger("qm_otel")

#: instrumentations qm-otel does itself: loading their entry points too would double them (the log
#: handler; httpx, which qm-otel instruments when it is imported — ``httpx2`` is the same package's
#: instrumentor for the httpx 2 line, whose loading imports httpx; the server span, which
#: qm-otel makes for FastAPI and Starlette apps; and the system metrics, which the metrics builder
#: instruments with the process and CPython metrics only, :mod:`qm_otel.runtime.process_metrics`: its
#: entry point would load the default configuration, every ``system.*`` and deprecated
#: ``process.runtime.*`` metric)
WIRED_BY_SETUP = frozenset({"logging", "httpx", "httpx2", "fastapi", "starlette", process_metrics.ENTRY_POINT})
_GROUP = "opentelemetry_instrumentor"
_DISABLED = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
#: span attributes that hold a statement's text (old and stable database semantic conventions)
_STATEMENT_KEYS = frozenset({"db.statement", "db.query.text"})

#: True while ``opentelemetry-instrument`` configures (:func:`loaded_by_wrapper`): it loads the instrumentors next
_WRAPPER_LOADS: contextvars.ContextVar[bool] = contextvars.ContextVar("qm_otel_wrapper_loads", default=False)


def _sanitized(key: str, value: AttributeValue) -> AttributeValue:
    return sanitize_statement(value) if key in _STATEMENT_KEYS and isinstance(value, str) else value


def _sanitized_all(attributes: Attributes) -> Attributes:
    if not attributes or _STATEMENT_KEYS.isdisjoint(attributes):
        return attributes
    return {key: _sanitized(key, value) for key, value in attributes.items()}


class _SanitizingSpan(Span):
    """The SDK's span, with statements sanitized on their way in; everything else passes through."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, _sanitized(key, value))

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self._span.set_attributes(_sanitized_all(attributes) or {})

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time)

    def get_span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        self._span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._span.set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        self._span.record_exception(exception, attributes, timestamp, escaped)

    def __getattr__(self, name: str) -> Any:
        """The SDK span's other attributes (``name``, ``attributes``, ``parent``…), as they are."""
        return getattr(self._span, name)


class _SanitizingTracer(trace.Tracer):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(  # noqa: PLR0917 - the API's signature
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return _SanitizingSpan(self._tracer.start_span(name, context, kind, _sanitized_all(attributes), links,
                                                       start_time, record_exception, set_status_on_exception))

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override] # noqa: PLR0917 - the API's signature
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                               set_status_on_exception)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current


class SanitizingTracerProvider(trace.TracerProvider):
    """``provider``'s tracers, whose spans never keep a database statement's literal values."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(  # noqa: D102 - as the API's
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        return _SanitizingTracer(self._provider.get_tracer(instrumenting_module_name, instrumenting_library_version,
                                                           schema_url, attributes))


def instrument(entry_point: EntryPoint, tracer_provider: trace.TracerProvider, meter_provider: Any,
               **kwargs: Any) -> bool:
    """Instrument the library of one ``opentelemetry_instrumentor`` entry point; whether it was.

    Not for what qm-otel wires itself, nor for a library the application instrumented on its own;
    one qm-otel instrumented before (an earlier ``setup()``) is instrumented again with these providers.
    Recorded by the running pipeline's :class:`Instrumentation` (RuntimeError without one).
    """
    if entry_point.name in WIRED_BY_SETUP:
        return False
    return _running().instrument(entry_point, tracer_provider, meter_provider, **kwargs)


def reinstrument(name: str, instrumentor: Any, **kwargs: Any) -> None:
    """``instrumentor.instrument(**kwargs)``, undoing an earlier instrumentation first; undone at ``shutdown()``.

    For the entry points above and for what qm-otel wires itself (httpx); recorded by the running
    pipeline's :class:`Instrumentation` (RuntimeError without one).
    """
    _running().reinstrument(name, instrumentor, **kwargs)


def _running() -> Instrumentation:
    owner = INSTRUMENTATION.get()
    if owner is None:
        message = "qm-otel instruments libraries only while a pipeline runs: call qm_otel.setup() first"
        raise RuntimeError(message)
    return owner


def _disabled(environ: Mapping[str, str]) -> set[str]:
    return {name.strip() for name in environ.get(_DISABLED, "").split(",") if name.strip()}


def _supported(entry_point: EntryPoint) -> bool:
    """Whether the installed library is one its instrumentation supports (the wrapper's dependency check).

    A library plainly not installed is found without the full check (:func:`_plainly_missing`),
    whose ``packaging`` import and metadata parsing cost ``setup()`` about 25 ms here for the
    instrumentations installed without their library.
    """
    if not entry_point.dist:
        return True
    conflict: object = _plainly_missing(entry_point.dist)
    if conflict is None:
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

        conflict = get_dist_dependency_conflicts(entry_point.dist)
    if conflict is not None:
        line = _declined(entry_point, conflict)
        if line is None:  # its library is not installed: nothing to tell
            _logger.debug("qm-otel: not instrumenting %s: %s", entry_point.name, conflict)
        else:
            _logger.warning(line)
        return False
    return True


def _declined(entry_point: EntryPoint, conflict: object) -> str | None:
    """The one line naming a library installed at a version its instrumentation declines; None if not installed.

    ``qm-otel: not instrumenting sqlalchemy 2.1.0: opentelemetry-instrumentation-sqlalchemy 0.66b1
    supports sqlalchemy >= 1.0.0, < 2.1.0``. ``conflict`` is the dependency check's answer (a
    ``DependencyConflict``), or the text of :func:`_plainly_missing`.
    """
    found = getattr(conflict, "found", None)
    found_any = getattr(conflict, "found_any", None)
    if found:
        library, supported = str(found), _supported_range([getattr(conflict, "required", None)])
    elif found_any:
        library, supported = ", ".join(map(str, found_any)), _supported_range(getattr(conflict, "required_any", ()))
    else:
        return None
    dist = entry_point.dist
    instrumentation = f"{dist.name} {dist.version}" if dist is not None else f"the {entry_point.name} instrumentation"
    return f"qm-otel: not instrumenting {library}: {instrumentation} supports {supported}"


def _supported_range(requirements: Any) -> str:
    """``sqlalchemy >= 1.0.0, < 2.1.0`` (lower bounds first), or several joined by ``or``."""
    from packaging.requirements import InvalidRequirement, Requirement

    texts = []
    for required in requirements:
        try:
            requirement = required if isinstance(required, Requirement) else Requirement(str(required))
        except InvalidRequirement:
            texts.append(str(required))
            continue
        specifiers = sorted(requirement.specifier, key=lambda s: (s.operator.startswith("<"), s.operator == "!="))
        bounds = ", ".join(f"{specifier.operator} {specifier.version}" for specifier in specifiers)
        texts.append(f"{requirement.name} {bounds}".strip())
    return " or ".join(texts)


#: the logger of ``opentelemetry-instrument``'s instrumentor loader, whose dependency check logs an
#: ERROR for a library installed at a version its instrumentation declines
_LOADER_LOGGER = "opentelemetry.instrumentation.auto_instrumentation._load"


class _DeclinedByLoader(logging.Filter):
    """Turns the loader's ERROR for a declined library into qm-otel's one line (:func:`_declined`).

    The record is matched to its entry point and the check run again for it: only a record that is
    exactly the loader's message for that conflict is replaced; any other passes as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        try:
            line = self._line_for(record.getMessage())
        except Exception:  # a message of another shape, or a check that fails: the loader's own line stays
            return True
        if line is None:
            return True
        _logger.warning(line)
        return False

    @staticmethod
    def _line_for(message: str) -> str | None:
        name = re.split(r" (?:only instruments|instruments any of) ", message, maxsplit=1)[0]
        entry_point = next((e for e in entry_points(group=_GROUP) if e.name == name), None)
        if entry_point is None or entry_point.dist is None:
            return None
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

        conflict = get_dist_dependency_conflicts(entry_point.dist)
        if conflict is None or str(conflict).replace("This instrumentation", name, 1) != message:
            return None
        return _declined(entry_point, conflict)


_LOADER_FILTER = _DeclinedByLoader()


#: a requirement of an instrumentation's ``instruments`` or ``instruments-any`` extra in its plainest form,
#: ``name[extras] specifier; extra == "instruments"`` (compiled on first use, by ``re``)
_PLAIN = (r"""([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?[^;\[\]]*"""
          r""";\s*extra\s*==\s*(["'])(instruments(?:-any)?)\2\s*""")


def _plainly_missing(dist: Any) -> str | None:
    """The dependency conflict of an instrumentation whose library is not installed at all, told without versions.

    The full check (``get_dist_dependency_conflicts``) reports one too, whatever the versions asked:
    a requirement of the ``instruments`` extra that is not installed, or none of the
    ``instruments-any`` ones installed. None when that is not so, or when a requirement is written
    in another form than the plainest (other markers): the full check decides.
    """
    installed: dict[str, list[tuple[str, bool]]] = {"instruments": [], "instruments-any": []}
    for requirement in _requirements(dist):
        if "extra" not in requirement or "instruments" not in requirement:
            continue  # not in those extras (the full check skips these the same way)
        plain = re.fullmatch(_PLAIN, requirement)
        if plain is None:
            return None
        try:
            version(plain.group(1))
        except PackageNotFoundError:
            installed[plain.group(3)].append((requirement, False))
        else:
            installed[plain.group(3)].append((requirement, True))
    missing = next((requirement for requirement, found in installed["instruments"] if not found), None)
    if missing is not None:
        return (f'This instrumentation only instruments "{missing}", but no installed version was found, so nothing '
                "can be instrumented.")
    choices = installed["instruments-any"]
    if choices and not any(found for _, found in choices):
        return (f'This instrumentation requires any of "{", ".join(r for r, _ in choices)}", but none are installed, '
                "so nothing can be instrumented.")
    return None


def _requirements(dist: Any) -> list[str]:
    """The ``Requires-Dist`` values of a distribution's METADATA (its headers only), as ``dist.requires`` has them.

    Read as text: the standard library parses the whole file as an e-mail message, about 2 ms each.
    """
    read = getattr(dist, "read_text", None)
    text = read("METADATA") if callable(read) else None
    if not isinstance(text, str):
        return list(getattr(dist, "requires", None) or ())
    values: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        if line[0] in " \t":  # a folded header: read as the standard library reads it
            return list(getattr(dist, "requires", None) or ())
        name, _, value = line.partition(":")
        if name.strip().lower() == "requires-dist":
            values.append(value.strip())
    return values


def _instrument_with_state(entry_point: EntryPoint, *, check_dependencies: bool = False, **kwargs: Any) -> bool:
    pipeline, owner = _state.PIPELINE.get(), INSTRUMENTATION.get()
    if pipeline is None or owner is None or (check_dependencies and not _supported(entry_point)):
        return False
    return owner.instrument(entry_point, pipeline.tracer_provider, pipeline.meter_provider, **kwargs)


def instrument_on_import(entry_point: EntryPoint, *, check_dependencies: bool = False, **kwargs: Any) -> bool:
    """:func:`instrument` with the pipeline in force, now or when the library (the entry point's name) is imported.

    Whether it is instrumented or waiting. An entry point whose name is not a module that can be
    imported (one named after no library) is instrumented now. ``check_dependencies``: the wrapper's
    dependency check first, at the same moment (for a library not imported yet, at its import:
    reading every instrumentation's requirements costs ``setup()`` about 20 ms here).
    """
    if entry_point.name in WIRED_BY_SETUP:
        return False
    name = entry_point.name

    def now() -> bool:
        return _instrument_with_state(entry_point, check_dependencies=check_dependencies, **kwargs)

    if name not in sys.modules and name.isidentifier() and _findable(name):
        return call_when_imported(name, now, key=f"instrument:{name}")
    return now()


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def instrument_installed(environ: Mapping[str, str] | None = None) -> list[str]:
    """Instrument every installed library as ``opentelemetry-instrument`` would; the entry-point names.

    The entry points are the ones the wrapper walks: the SDK's list, read once per process (the
    resource detectors read it already). Nothing without a running pipeline, nor when the wrapper
    is about to do it itself (:func:`loaded_by_wrapper`). A library whose version its
    instrumentation does not support is skipped with one WARNING line naming the library, its
    version and the range supported (for a library not imported yet, found out at its import); an
    instrumentation whose library is not installed is skipped without a word (DEBUG); an
    instrumentation that fails is logged and skipped: the service runs without it.
    """
    owner = INSTRUMENTATION.get()
    if owner is None:
        return []
    if _WRAPPER_LOADS.get():
        owner.translate_loader_errors()
        return []
    disabled = _disabled(os.environ if environ is None else environ)
    if "*" in disabled:
        return []
    names = []
    for entry_point in entry_points(group=_GROUP):
        if entry_point.name in disabled or entry_point.name in WIRED_BY_SETUP:
            continue
        try:
            if instrument_on_import(entry_point, check_dependencies=True, skip_dep_check=True):
                names.append(entry_point.name)
        except Exception:
            _logger.exception("qm-otel: instrumenting %s failed; the service runs without it", entry_point.name)
    return names


#: module name → (key → what to call once it has been imported)
_Waiting = dict[str, dict[str, Callable[[], object]]]


class _ThenCall(importlib.abc.Loader):
    """A module's own loader, then what waits for the module once it has run."""

    def __init__(self, loader: importlib.abc.Loader, name: str, waiting: _Waiting) -> None:
        self._loader = loader
        self._name = name
        self._waiting = waiting

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:
        """The module's own loader for the rest (``get_resource_reader``, ``get_source``, ``is_package``…)."""
        return getattr(self._loader, name)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for callback in self._waiting.pop(self._name, {}).values():
            try:
                callback()
            except Exception:  # the application's import never fails because of telemetry
                _logger.exception("qm-otel could not instrument %s; its calls are not traced", self._name)


class _CallOnImport(importlib.abc.MetaPathFinder):
    """Finds a waited-for module on ``sys.path`` as the standard finder does, and wraps its loader.

    Asking for the spec without importing (``importlib.util.find_spec``) changes nothing.
    """

    def __init__(self, waiting: _Waiting) -> None:
        self._waiting = waiting

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        del target
        if fullname not in self._waiting:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenCall(spec.loader, fullname, self._waiting)
        return spec


class Instrumentation:
    """What one pipeline instrumented and what waits for an import; :meth:`close` undoes all of it.

    The ``Telemetry`` handle owns it; ``shutdown()`` closes it. Its import hook is a finder of its
    own at the head of ``sys.meta_path``, there only while something waits.
    """

    def __init__(self) -> None:
        #: the instrumentors instrumented, by entry-point name (each is a process-wide singleton)
        self._instrumentors: dict[str, Any] = {}
        self._waiting: _Waiting = {}
        self._finder = _CallOnImport(self._waiting)
        self._translating = False

    def instrument(self, entry_point: EntryPoint, tracer_provider: trace.TracerProvider, meter_provider: Any,
                   **kwargs: Any) -> bool:
        """:func:`instrument`, recorded here."""
        if entry_point.name in WIRED_BY_SETUP:
            return False
        instrumentor = entry_point.load()()
        if (getattr(instrumentor, "is_instrumented_by_opentelemetry", False)
                and entry_point.name not in self._instrumentors):
            return False  # the application instrumented it itself
        self.reinstrument(entry_point.name, instrumentor, tracer_provider=SanitizingTracerProvider(tracer_provider),
                          meter_provider=meter_provider, **kwargs)
        return True

    def reinstrument(self, name: str, instrumentor: Any, **kwargs: Any) -> None:
        """:func:`reinstrument`, recorded here."""
        if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
            instrumentor.uninstrument()
        instrumentor.instrument(**kwargs)
        self._instrumentors[name] = instrumentor

    def call_when_imported(self, name: str, callback: Callable[[], object], *, key: str) -> bool:
        """Call ``callback`` now if module ``name`` is imported, else right after its first import.

        False (and nothing called) when it is not installed. One callback per ``key``: a later call
        with the same key replaces a waiting one. Nothing is called after :meth:`close`.
        """
        if name in sys.modules:
            callback()
            return True
        if not _findable(name):
            return False
        self._waiting.setdefault(name, {})[key] = callback
        if self._finder not in sys.meta_path:
            sys.meta_path.insert(0, self._finder)
        return True

    def translate_loader_errors(self) -> None:
        """Under the wrapper: its loader's ERROR for a declined library becomes qm-otel's line, until :meth:`close`."""
        logging.getLogger(_LOADER_LOGGER).addFilter(_LOADER_FILTER)
        self._translating = True

    def instrumented(self) -> list[str]:
        """The entry-point names of the libraries instrumented, sorted."""
        return sorted(self._instrumentors)

    def close(self) -> None:
        """Every library instrumented goes back to itself; nothing waits for an import; the finder goes.

        The wrapper's loader logs as it did before.
        """
        self._waiting.clear()
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._finder)
        if self._translating:
            logging.getLogger(_LOADER_LOGGER).removeFilter(_LOADER_FILTER)
            self._translating = False
        process_metrics.uninstrument()  # the next setup() instruments the runtime metrics on its provider
        while self._instrumentors:
            name, instrumentor = self._instrumentors.popitem()
            try:
                instrumentor.uninstrument()
            except Exception:
                _logger.exception("qm-otel could not uninstrument %s", name)


#: the running pipeline's :class:`Instrumentation` (set by ``setup()``; ``shutdown()`` closes it and empties the slot)
INSTRUMENTATION: _state.Slot[Instrumentation] = _state.Slot("instrumentation")


def call_when_imported(name: str, callback: Callable[[], object], *, key: str) -> bool:
    """:meth:`Instrumentation.call_when_imported` of the running pipeline; False without one (nothing waits)."""
    owner = INSTRUMENTATION.get()
    return False if owner is None else owner.call_when_imported(name, callback, key=key)


def instrumented() -> list[str]:
    """The entry-point names of the libraries the running pipeline has instrumented."""
    owner = INSTRUMENTATION.get()
    return [] if owner is None else owner.instrumented()


@contextlib.contextmanager
def loaded_by_wrapper() -> Iterator[None]:
    """While ``opentelemetry-instrument`` configures: it loads the instrumentors itself right after.

    The pipeline ``setup()`` builds inside makes its loader's ERROR for a library it declines
    qm-otel's one line (:class:`_DeclinedByLoader`, on the loader's logger until ``shutdown()``).
    """
    token = _WRAPPER_LOADS.set(True)
    try:
        yield
    finally:
        _WRAPPER_LOADS.reset(token)
