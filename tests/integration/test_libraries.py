"""Issue 14, item 6: the libraries a service uses are traced on both launch paths.

A FastAPI app on a real PostgreSQL (Debian's, started here) through SQLAlchemy and psycopg 3, served
by real uvicorn, exporting to a real OTLP receiver: each request's database calls are spans of its
trace, children of its server span, with the semantic-convention attributes and without the values
written into a statement.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata

import httpx
import pytest

from tests.support.otlp_receiver import OtlpReceiver, Span
from tests.support.postgres import postgres_server
from tests.support.service import base_env, packages_dir, start

pytestmark = pytest.mark.integration

APP = "tests.integration.apps.database:app"
SERVER, CLIENT = 2, 3  # OTLP SpanKind values


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _trace(receiver: OtlpReceiver, server: Span) -> list[Span]:
    return [span for span in receiver.snapshot()[0] if span.trace_id == server.trace_id]


def _ancestors(span: Span, by_id: dict[str, Span]) -> list[str]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span.span_id)
    return chain


def _server_span(receiver: OtlpReceiver, route: str, method: str = "GET") -> Span:
    def found(r: OtlpReceiver) -> Span | None:
        return next((s for s in r.snapshot()[0] if s.kind == SERVER and s.attributes.get("http.route") == route
                     and s.attributes.get("http.request.method") == method), None)
    return receiver.wait_for(found)


@pytest.mark.parametrize("path", ["opentelemetry-instrument", "setup"])
def test_database_calls_are_spans_of_the_request(receiver: OtlpReceiver, path: str, database_url: str) -> None:
    env = base_env(receiver.endpoint, DATABASE_URL=database_url, OTEL_SERVICE_NAME=f"db-{path}")
    if path == "setup":
        env["QM_OTEL_TEST_SETUP"] = "1"
    with start(APP, env, zero_code=path == "opentelemetry-instrument") as service:
        email = f"ann-{path}@example.com"
        assert httpx.post(f"{service.url}/users/{email}", timeout=30).status_code == 200
        assert service.get(f"/users/{email}").json()["id"] >= 1
        assert service.get("/report").json() == {"count": 0}
        lookup = _server_span(receiver, "/users/{email}")
        report = _server_span(receiver, "/report")
        # the database spans of both requests have arrived (the batch may split them)
        receiver.wait_for(lambda r: (sum(1 for s in _trace(r, lookup) if s.kind == CLIENT) >= 2
                          and any(s.kind == CLIENT for s in _trace(r, report))) or None)

    for server in (lookup, report):
        spans = _trace(receiver, server)
        by_id = {s.span_id: s for s in spans}
        database = [s for s in spans if "db.system" in s.attributes or "db.system.name" in s.attributes]
        scopes = {s.scope for s in database}
        # both layers: the ORM's engine and the driver under it
        assert "opentelemetry.instrumentation.sqlalchemy" in scopes, scopes
        assert "opentelemetry.instrumentation.psycopg" in scopes, scopes
        for span in database:
            assert span.kind == CLIENT
            assert server.span_id in _ancestors(span, by_id), (span.name, span.parent_span_id)
            attrs = span.attributes
            assert (attrs.get("db.system") or attrs.get("db.system.name")) == "postgresql"
            assert (attrs.get("db.name") or attrs.get("db.namespace")) == "postgres"
            assert "127.0.0.1" in (attrs.get("net.peer.name"), attrs.get("server.address"))
            # every span but the engine's "connect" carries the statement it ran
            assert span.name == "connect" or attrs.get("db.statement") or attrs.get("db.query.text"), span
    lookup_statements = {s.attributes.get("db.statement") for s in _trace(receiver, lookup)} - {None}
    assert any("FROM users" in st and "WHERE users.email = %(email_1)s" in st for st in lookup_statements), \
        lookup_statements
    report_statements = {s.attributes.get("db.statement") for s in _trace(receiver, report)} - {None}
    assert report_statements == {"SELECT count(*) FROM users WHERE email = ? OR id > ?"}, report_statements

    # never a value: not the inline literals, not the bound e-mail address (the server span's url.path
    # is the request's own URL), on any other span
    everything = repr([(s.name, s.attributes) for s in receiver.snapshot()[0] if s.kind != SERVER])
    # the number literal has 8 digits: no port number (the test database's is random) can contain it
    for secret in ("ann@example.com", "73412985", f"ann-{path}@example.com"):
        assert secret not in everything
    # the exporters' own HTTP calls (requests/urllib3 are instrumented too) are not traced
    assert not [s for s in receiver.snapshot()[0] if s.kind == CLIENT and "db.system" not in s.attributes
                and str(receiver.endpoint).split("//")[1] in repr(s.attributes)]
    # the start-up record names what was instrumented
    started = next(line for line in service.lines if "instrumentations ready" in line)
    if path == "setup":
        assert "sqlalchemy" in started, started
        assert "psycopg" in started, started


def test_disabled_instrumentations_are_left_alone(receiver: OtlpReceiver, database_url: str) -> None:
    env = base_env(receiver.endpoint, DATABASE_URL=database_url, QM_OTEL_TEST_SETUP="1",
                   OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="sqlalchemy")
    with start(APP, env) as service:
        assert service.get("/report").json() == {"count": 0}
        report = _server_span(receiver, "/report")
        receiver.wait_for(lambda r: any(s.kind == CLIENT for s in _trace(r, report)) or None)
    scopes = {s.scope for s in _trace(receiver, report) if s.kind == CLIENT}
    assert scopes == {"opentelemetry.instrumentation.psycopg"}


@pytest.fixture(scope="module")
def sqlalchemy_2_1(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A directory holding SQLAlchemy 2.1 (which the contrib instrumentation 0.66b1 declines), and its version."""
    target = tmp_path_factory.mktemp("sqlalchemy-2.1")
    packages_dir(target, "sqlalchemy>=2.1,<2.2")
    [info] = target.glob("sqlalchemy-*.dist-info")
    return str(target), info.name.removeprefix("sqlalchemy-").removesuffix(".dist-info")


@pytest.mark.parametrize("path", ["opentelemetry-instrument", "setup"])
def test_a_library_its_instrumentation_declines_is_named_in_one_line(receiver: OtlpReceiver, path: str,
                                                                     database_url: str,
                                                                     sqlalchemy_2_1: tuple[str, str]) -> None:
    """Issue 22, item 3: which library, which version, which range is supported; not the loader's ERROR."""
    directory, version = sqlalchemy_2_1
    env = base_env(receiver.endpoint, DATABASE_URL=database_url, OTEL_SERVICE_NAME=f"declined-{path}")
    env["PYTHONPATH"] = f"{directory}:{env['PYTHONPATH']}"
    if path == "setup":
        env["QM_OTEL_TEST_SETUP"] = "1"
    with start(APP, env, zero_code=path == "opentelemetry-instrument") as service:
        assert service.get("/report").json() == {"count": 0}  # the app runs on SQLAlchemy 2.1, untraced by it
        report = _server_span(receiver, "/report")
        receiver.wait_for(lambda r: any(s.kind == CLIENT for s in _trace(r, report)) or None)
    expected = (f"qm-otel: not instrumenting sqlalchemy {version}: opentelemetry-instrumentation-sqlalchemy "
                f"{metadata.version('opentelemetry-instrumentation-sqlalchemy')} supports sqlalchemy >= 1.0.0, < 2.1.0")
    everything = service.output() + service.errors()
    assert everything.count("not instrumenting") == 1, everything
    [line] = [line for line in everything.splitlines() if "not instrumenting" in line]
    assert expected in line, line
    assert json.loads(line)["level"] == "WARNING"
    assert "only instruments" not in everything  # the loader's ERROR
    # the driver under it is still traced
    assert {s.scope for s in _trace(receiver, report) if s.kind == CLIENT} == {"opentelemetry.instrumentation.psycopg"}
