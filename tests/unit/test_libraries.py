"""Statements lose their values; installed instrumentations follow setup() → shutdown() → setup()."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import logging
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import qm_otel
from qm_otel.core.redaction import sanitize_statement
from qm_otel.instrumentation import libraries
from qm_otel.testing import Capture, reset

OFF = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none"}


def _quoted(text: str) -> str:
    """A string literal with its backslashes escaped (MySQL's default; PostgreSQL's E'' strings)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _dollar_quoted(text: str) -> str:
    return "$body$" + text.replace("$body$", "") + "$body$"


LITERALS = st.one_of(
    st.text().map(_quoted),
    st.text().map(lambda t: "E" + _quoted(t)),
    st.text().map(_dollar_quoted),
    st.integers(min_value=0).map(str),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
    st.binary(max_size=8).map(lambda b: f"X'{b.hex()}'"),
)
TEMPLATES = [
    "SELECT * FROM users WHERE email = {} AND id = %(id)s",
    "INSERT INTO t1 (a, b2) VALUES ({}, $1)",
    "UPDATE \"Users\" SET name = {} WHERE id = :id -- by job 7",
    "select count(*) from t where x in ({}, ?)",
]


@given(st.sampled_from(TEMPLATES), LITERALS, LITERALS)
def test_a_statements_sanitized_form_does_not_depend_on_its_values(template: str, one: str, other: str) -> None:
    assert sanitize_statement(template.format(one)) == sanitize_statement(template.format(other))


@given(st.sampled_from(TEMPLATES), LITERALS)
def test_names_keywords_and_placeholders_are_kept(template: str, literal: str) -> None:
    clean = sanitize_statement(template.format(literal))
    assert clean == sanitize_statement(template.format("0"))
    for kept in ("%(id)s", "$1", ":id", "users", "t1", "b2", '"Users"'):
        if kept in template:
            assert kept in clean


@given(st.text())
def test_any_text_is_sanitized_without_error_and_never_grows_a_quote(text: str) -> None:
    clean = sanitize_statement(text)
    assert clean.count("'") <= text.count("'")


@pytest.mark.parametrize(("statement", "expected"), [
    ("SELECT 'unterminated secret", "SELECT ?"),
    # a backslash escapes (MySQL, E''): a PostgreSQL string ending in one takes the rest along
    ("SELECT 'C:\\' , secret_column", "SELECT ?"),
    ("SELECT 'it\\'s' , 1", "SELECT ? , ?"),
    ("SELECT ARRAY[1, 2.5e3, .5, 0xFF]", "SELECT ARRAY[?, ?, ?, ?]"),
    ("SELECT $$a 'b' c$$, $fn$ x $fn$", "SELECT ?, ?"),
    # a tagged body ends only at its own tag: $$ inside it is part of the value
    ("SELECT $fn$ secret $$ more secret $fn$ FROM t", "SELECT ? FROM t"),
    ("select name2, t.col_3 from t3 where id=7", "select name2, t.col_3 from t3 where id=?"),
    ("SELECT U&'d\\0061t' , B'101', N'x'", "SELECT ? , ?, ?"),
])
def test_sanitized_examples(statement: str, expected: str) -> None:
    assert sanitize_statement(statement) == expected


def _statements(capture: Capture) -> list[str]:
    return [str(span.attributes.get("db.statement")) for span in capture.spans.get_finished_spans()
            if span.attributes and "db.statement" in span.attributes]


def _query(sql: str) -> None:
    connection = sqlite3.connect(":memory:")
    try:
        connection.cursor().execute(sql).fetchall()  # the instrumentation traces cursors
    finally:
        connection.close()


def test_installed_instrumentations_follow_each_setup_and_lose_values() -> None:
    first = Capture()
    qm_otel.setup(**OFF, **first.setup_kwargs())
    try:
        assert "sqlite3" in libraries.instrumented()
        _query("SELECT 'secret', 42")
    finally:
        reset()
    second = Capture()
    qm_otel.setup(**OFF, **second.setup_kwargs())
    try:
        _query("SELECT 'other secret', 43")
    finally:
        reset()
    # each setup()'s pipeline gets the spans made while it runs, never the values
    assert _statements(first) == ["SELECT ?, ?"]
    assert _statements(second) == ["SELECT ?, ?"]


def test_disabled_instrumentations_are_not_touched() -> None:
    qm_otel.setup(**OFF, **Capture().setup_kwargs())
    try:
        assert libraries.instrument_installed({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}) == []
        names = libraries.instrument_installed({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": " sqlite3 , x"})
    finally:
        reset()
    assert "sqlite3" not in names
    assert "psycopg" in names  # the others are (its library is installed with the test extra)


def test_nothing_is_instrumented_without_a_pipeline_or_twice_while_the_wrapper_loads() -> None:
    assert libraries.instrument_installed({}) == []
    qm_otel.setup(**OFF, **Capture().setup_kwargs())
    try:
        with libraries.loaded_by_wrapper():
            assert libraries.instrument_installed({}) == []
    finally:
        reset()


def test_a_library_imported_later_is_instrumented_at_its_import(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "late_library.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    owner = libraries.Instrumentation()
    try:
        assert owner.call_when_imported("late_library", lambda: seen.append(sys.modules["late_library"].VALUE),
                                        key="test")
        assert seen == []  # not imported by asking
        assert importlib.util.find_spec("late_library") is not None
        assert seen == []
        importlib.import_module("late_library")
        assert seen == [1]
        assert not owner.call_when_imported("no_such_library_here", lambda: seen.append(2), key="test")
        assert seen == [1]
    finally:
        owner.close()


def test_a_hook_waits_only_while_its_pipeline_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "late_after_shutdown.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    finders = list(sys.meta_path)
    seen: list[str] = []
    assert not libraries.call_when_imported("late_after_shutdown", lambda: seen.append("no pipeline"), key="test")
    qm_otel.setup(**OFF, **Capture().setup_kwargs())
    try:
        assert libraries.call_when_imported("late_after_shutdown", lambda: seen.append("called"), key="test")
        assert len(sys.meta_path) == len(finders) + 1
    finally:
        reset()
    assert sys.meta_path == finders  # the finder went with the pipeline
    importlib.import_module("late_after_shutdown")
    assert seen == []


def test_shutdown_returns_every_library_to_itself() -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    capture = Capture()
    qm_otel.setup(**OFF, **capture.setup_kwargs())
    assert "sqlite3" in libraries.instrumented()
    assert "httpx" in libraries.instrumented()
    reset()
    assert libraries.instrumented() == []
    assert not SQLite3Instrumentor().is_instrumented_by_opentelemetry
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    _query("SELECT 'after shutdown'")
    assert _statements(capture) == []


class _Dist:
    """A distribution whose instrumentation wants a library version that is not installed."""

    requires = ('no-such-library-qm-otel-test>=1; extra == "instruments"',)


class _EntryPoint:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dist = _Dist()
        self.loaded = 0

    def load(self) -> object:
        self.loaded += 1
        raise AssertionError("an unsupported library's instrumentor is never loaded")


def test_an_unsupported_library_is_checked_at_its_import_and_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "late_unsupported.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_point = _EntryPoint("late_unsupported")
    qm_otel.setup(**OFF, **Capture().setup_kwargs())
    try:
        assert libraries.instrument_on_import(entry_point, check_dependencies=True)  # waits for the import
        importlib.import_module("late_unsupported")
        assert entry_point.loaded == 0
        assert "late_unsupported" not in libraries.instrumented()
        # imported already: checked at once, and not reported as instrumented
        assert not libraries.instrument_on_import(entry_point, check_dependencies=True)
    finally:
        reset()


def test_a_module_imported_through_the_hook_keeps_its_loaders_other_abilities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "late_package"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "data.txt").write_text("resource\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[str] = []
    owner = libraries.Instrumentation()
    try:
        assert owner.call_when_imported("late_package", lambda: seen.append("called"), key="test")
        module = importlib.import_module("late_package")
    finally:
        owner.close()
    assert seen == ["called"]
    assert module.__spec__ is not None
    assert module.__spec__.loader is not None
    assert module.__spec__.loader.is_package("late_package")  # type: ignore[attr-defined]
    assert "VALUE = 1" in (module.__spec__.loader.get_source("late_package") or "")  # type: ignore[attr-defined]
    assert (importlib.resources.files("late_package") / "data.txt").read_text() == "resource\n"


def test_the_quick_check_for_a_missing_library_agrees_with_the_full_dependency_check() -> None:
    """Over every installed instrumentation: a conflict found without versions is one the full check finds too."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    checked = 0
    for dist in importlib.metadata.distributions():
        assert libraries._requirements(dist) == list(dist.requires or ()), dist.metadata["Name"]
        if not dist.metadata["Name"].startswith("opentelemetry-instrumentation-"):
            continue
        checked += 1
        quick, full = libraries._plainly_missing(dist), get_dist_dependency_conflicts(dist)
        assert quick is None or full is not None, (dist.metadata["Name"], quick)
        if full is not None and not getattr(full, "found", None) and not getattr(full, "found_any", None):
            assert quick is not None, dist.metadata["Name"]  # not installed at all: told without the full check
    assert checked >= 5


class _Requires:
    def __init__(self, *requires: str) -> None:
        self.requires = requires


@pytest.mark.parametrize(("requires", "missing"), [
    (('no-such-library-qm-otel-test>=1; extra == "instruments"',), True),
    (("no-such-library-qm-otel-test[extra] (>=1,<3) ; extra == 'instruments'",), True),
    (('pytest>=1; extra == "instruments"', 'no-such-library-qm-otel-test; extra == "instruments"'), True),
    (('no-such-library-qm-otel-test>=1; extra == "instruments-any"', 'pytest; extra == "instruments-any"'), False),
    (('no-such-library-qm-otel-test>=1; extra == "instruments-any"',), True),
    (('no-such-library-qm-otel-test>=1; extra == "instruments" and python_version >= "3"',), False),  # full check
    (('no-such-library-qm-otel-test>=1; extra == "test"',), False),
    (('pytest>=99; extra == "instruments"',), False),  # installed: the versions are the full check's
])
def test_a_missing_library_is_told_from_the_plainest_requirements_only(requires: tuple[str, ...],
                                                                       missing: bool) -> None:
    assert (libraries._plainly_missing(_Requires(*requires)) is not None) == missing


def test_requirements_are_read_from_the_metadata_headers_only(tmp_path: Path) -> None:
    info = tmp_path / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: one>=1;\n  extra == 'instruments'\n"
        "Requires-Dist: two\n\nRequires-Dist: not-a-header (in the description)\n")
    dist = importlib.metadata.PathDistribution(info)
    assert libraries._requirements(dist) == list(dist.requires or ())  # a folded header: read the standard way
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: one>=1; extra == 'instruments'\n"
        "Requires-Dist: two\n\nRequires-Dist: not-a-header (in the description)\n")
    assert libraries._requirements(dist) == list(dist.requires or ()) == ["one>=1; extra == 'instruments'", "two"]


class _DeclinedDist:
    """An instrumentation whose library (pytest, installed here) is at a version it does not support."""

    name = "opentelemetry-instrumentation-qm-test"
    version = "0.66b1"
    requires = ('pytest<2.1.0,>=1.0.0; extra == "instruments"',)


class _DeclinedEntryPoint:
    name = "pytest"
    dist = _DeclinedDist()

    def load(self) -> object:
        raise AssertionError("a declined library's instrumentor is never loaded")


DECLINED = (f"qm-otel: not instrumenting pytest {importlib.metadata.version('pytest')}: "
            "opentelemetry-instrumentation-qm-test 0.66b1 supports pytest >= 1.0.0, < 2.1.0")


def test_a_declined_library_is_named_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert not libraries._supported(_DeclinedEntryPoint())  # type: ignore[arg-type]
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [("qm_otel", "WARNING", DECLINED)]


def test_a_library_that_is_not_installed_is_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert not libraries._supported(_EntryPoint("not_installed"))  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records] == ["DEBUG"]


@pytest.mark.parametrize(("requires", "supported"), [
    (["sqlalchemy<2.1.0,>=1.0.0"], "sqlalchemy >= 1.0.0, < 2.1.0"),
    (["httpx>=0.18.0", "httpx2>=2.0.0"], "httpx >= 0.18.0 or httpx2 >= 2.0.0"),
    (["redis!=4.0.0,>=2.6"], "redis >= 2.6, != 4.0.0"),
    (["celery"], "celery"),
])
def test_the_supported_range_reads_lower_bounds_first(requires: list[str], supported: str) -> None:
    assert libraries._supported_range(requires) == supported


def test_under_the_wrapper_its_loaders_error_becomes_the_one_line(caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper's loader logs the dependency check's ERROR itself; qm-otel's line replaces it until shutdown."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    monkeypatch.setattr(libraries, "entry_points", lambda group: [_DeclinedEntryPoint()])
    loader = logging.getLogger(libraries._LOADER_LOGGER)
    conflict = get_dist_dependency_conflicts(_DeclinedDist())  # type: ignore[arg-type]
    assert conflict is not None
    with libraries.loaded_by_wrapper():
        qm_otel.setup(**OFF, **Capture().setup_kwargs())
    try:
        caplog.set_level(logging.DEBUG)
        caplog.clear()
        conflict._log(loader, "pytest")  # as opentelemetry-instrument's _load_instrumentors does
        loader.error("pytest something else went wrong")  # not the check's message: left as it is
        assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
            ("qm_otel", "WARNING", DECLINED), (libraries._LOADER_LOGGER, "ERROR", "pytest something else went wrong")]
    finally:
        reset()
    caplog.clear()
    conflict._log(loader, "pytest")
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # after shutdown, the loader's own again
