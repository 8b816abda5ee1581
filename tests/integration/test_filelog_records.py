"""The collector's filelog path gives Loki the records the OTLP path gives it (issue 21, item 3).

A real uvicorn service logs with qm-otel, writing JSON lines to stdout and exporting the same records
over OTLP to a real receiver. Each stdout line is wrapped as Docker's json-file driver writes it, and
the operator chain of ``collector/otel-collector.filelog.yaml`` is run over it by :class:`Chain`, a
small interpreter of exactly the stanza operators, fields and ``if`` expressions that file uses
(semantics from pkg/stanza at the pinned collector-contrib tag; anything else in the file fails the
test instead of being guessed). Each record the chain yields must equal the OTLP record of the same
log call: body, timestamp, severity text and number, trace and span IDs, scope, ``service.name`` and
every attribute. The collector itself does not run here (no Docker, no otelcol binary).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.support import service as svc
from tests.support.otlp_receiver import Log, OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "collector/otel-collector.filelog.yaml"
APP = "tests.integration.test_filelog_records:create_app"
LOG_PATH = "/var/lib/docker/containers/abc/abc-json.log"
#: Docker's json-file driver splits a line into parts of at most this many bytes
DOCKER_PART = 16 * 1024
LONG = "x" * 20_000


# --- the service -----------------------------------------------------------------------------------


def create_app() -> Any:
    """The service (``uvicorn --factory``): records of every kind the chain maps."""
    from fastapi import FastAPI, HTTPException

    import qm_otel

    app = FastAPI()
    log = logging.getLogger("shop.orders")

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        log.info("item looked up", extra={"item_id": item_id, "price": 9.5, "in_stock": True,
                                          "tags": ["a", "b"]})
        log.warning("stock low", extra={"item_id": item_id})
        log.critical("stock gone")
        return {"id": item_id}

    @app.get("/user")
    def user() -> dict[str, str]:
        qm_otel.set_user("u-7", name="Grace")
        log.error("payment declined")
        return {"ok": "yes"}

    @app.get("/fail")
    def fail() -> None:
        try:
            1 / 0  # noqa: B018 - the exception is the point
        except ZeroDivisionError:
            log.exception("division failed")
        raise HTTPException(status_code=503)

    @app.get("/long")
    def long() -> dict[str, int]:
        log.info("long line", extra={"blob": LONG})
        return {"n": len(LONG)}

    @app.get("/event")
    def event() -> dict[str, str]:
        qm_otel.event("CACHE", "warm", "SUCCESS", 12.5, detail_count=3)
        return {"ok": "yes"}

    qm_otel.setup(app=app)
    return app


CALLS = [("/items/7?color=red", {}), ("/user?q=1", {"X-Correlation-ID": "order-1"}), ("/fail", {}),
         ("/long", {}), ("/event", {})]
MESSAGES = {"item looked up", "stock low", "stock gone", "payment declined",
            "division failed", "long line", "CACHE warm SUCCESS"}


@dataclass
class Run:
    lines: list[str]
    #: the records at the receiver (each with its scope name and timestamp)
    exported: list[Log]
    env: dict[str, str]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with OtlpReceiver().start() as receiver:
        env = svc.base_env(receiver.endpoint, QM_OTEL_ENVIRONMENT="staging", OTEL_SERVICE_NAME="shop")
        with svc.start(APP, env, extra_args=("--factory",)) as service:
            for path, headers in CALLS:
                service.get(path, headers=headers)
            receiver.wait_for(lambda r: {log.body for log in r.snapshot()[1]} >= MESSAGES)
            receiver.wait_for(lambda r: sum(1 for log in r.snapshot()[1]
                                            if log.attributes.get("event") == "http_request") >= len(CALLS))
        yield Run([line for line in service.output().splitlines() if line], receiver.snapshot()[1], env)


# --- Docker's json-file lines ----------------------------------------------------------------------


def docker_lines(line: str, attrs: dict[str, str] | None, stream: str = "stdout") -> list[str]:
    """``line`` as the json-file driver writes it: parts of at most 16 KiB, the last ending in a newline."""
    data = (line + "\n").encode("utf-8")
    parts = [data[i:i + DOCKER_PART] for i in range(0, len(data), DOCKER_PART)]
    written = []
    for part in parts:
        entry: dict[str, Any] = {"log": part.decode("utf-8"), "stream": stream}
        if attrs is not None:
            entry["attrs"] = attrs
        entry["time"] = "2026-05-26T10:00:00.123456789Z"
        written.append(json.dumps(entry))
    return written


# --- the operator chain ----------------------------------------------------------------------------

#: stanza's default severity mapping (operator/helper/severity_builder.go getBuiltinMapping: the
#: otel aliases, plus warning/err) and the text each severity prints (entry/severity.go sevText)
_SEVERITIES = {name: number for number, name in enumerate(
    ["default", "trace", "trace2", "trace3", "trace4", "debug", "debug2", "debug3", "debug4", "info", "info2",
     "info3", "info4", "warn", "warn2", "warn3", "warn4", "error", "error2", "error3", "error4", "fatal", "fatal2",
     "fatal3", "fatal4"])}
_DEFAULT_MAPPING = {**{name: number for name, number in _SEVERITIES.items() if name != "default"},
                    **{str(number): number for number in range(1, 25)},
                    "warning": 13, "warning2": 14, "warning3": 15, "warning4": 16,
                    "err": 17, "err2": 18, "err3": 19, "err4": 20}
_SEVERITY_TEXT = {number: name.upper() for name, number in _SEVERITIES.items()}
#: Go reference-time tokens this interpreter translates (the time_parser's gotime layout)
_GO_LAYOUT = [("2006", "%Y"), ("01", "%m"), ("02", "%d"), ("15", "%H"), ("04", "%M"), ("05", "%S"),
              (".000", ".%f"), ("Z07:00", "%z")]


@dataclass
class Entry:
    """A stanza entry (pkg/stanza/entry/entry.go): what becomes the OTLP log record."""

    body: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    timestamp: int = 0
    severity: int = 0
    severity_text: str = ""
    trace_id: str = ""
    span_id: str = ""
    scope: str = ""


def split_field(text: str) -> tuple[str, list[str]]:
    """A stanza field (entry/field.go fromJSONDot): ``attributes.a.b``, ``attributes["a.b"]``, ``body``."""
    keys: list[str] = []
    position = 0
    while position < len(text):
        bracketed = re.match(r"""\[(["'])(.*?)\1\]""", text[position:])
        plain = re.match(r"[^.\[\]]+", text[position:])
        match = bracketed or plain
        assert match, f"not a stanza field: {text}"
        keys.append(match.group(2) if bracketed else match.group(0))
        position += match.end()
        if position < len(text):
            assert text[position] in ".[", f"not a stanza field: {text}"
            position += text[position] == "."
    assert keys, f"not a stanza field: {text}"
    assert keys[0] in ("attributes", "resource", "body"), f"not a stanza field: {text}"
    return keys[0], keys[1:]


def get(entry: Entry, text: str) -> tuple[Any, bool]:
    prefix, keys = split_field(text)
    value: Any = entry.attributes if prefix == "attributes" else entry.resource if prefix == "resource" \
        else entry.body
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None, False
        value = value[key]
    return value, True


def delete(entry: Entry, text: str) -> tuple[Any, bool]:
    prefix, keys = split_field(text)
    assert keys, f"only fields below {prefix} are removed or moved here: {text}"
    value: Any = entry.attributes if prefix == "attributes" else entry.resource
    for key in keys[:-1]:
        if not isinstance(value, dict) or key not in value:
            return None, False
        value = value[key]
    if not isinstance(value, dict) or keys[-1] not in value:
        return None, False
    return value.pop(keys[-1]), True


def put(entry: Entry, text: str, value: Any) -> None:
    """entry/attribute_field.go Set: a map value is merged into the target, anything else replaces it."""
    prefix, keys = split_field(text)
    if prefix == "body":
        assert not keys
        entry.body = value
        return
    target = entry.attributes if prefix == "attributes" else entry.resource
    for key in keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    if not keys:
        assert isinstance(value, dict), "only a map is merged into a root"
        target.update(value)
    elif isinstance(value, dict):
        if not isinstance(target.get(keys[-1]), dict):
            target[keys[-1]] = {}
        target[keys[-1]].update(value)
    else:
        target[keys[-1]] = value


class Expr:
    """The subset of expr-lang the overlay's ``if``/``expr`` strings use, evaluated like stanza does.

    ``attributes.a.b`` / ``attributes["a.b"]`` (nil when absent), ``nil``, ``==``, ``!=``,
    ``"k" in attributes``, ``x in [..]``, ``body matches "re"``, ``and``, ``or``. Anything else is
    refused, so a new construct in the overlay fails here until it is interpreted.
    """

    _TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<path>\b(?:attributes|resource|body)"""
                        r"""(?:\.[A-Za-z_]\w*|\["[^"]*"\])*)|(?P<op>==|!=|\[|\]|,)|(?P<word>\b(?:nil|and|or|in|"""
                        r"""matches)\b))""")

    def __init__(self, source: str) -> None:
        self.source = source
        pieces, position = [], 0
        while position < len(source):
            match = self._TOKEN.match(source, position)
            assert match, f"unsupported expression: {source!r} at {source[position:]!r}"
            assert match.end() > position, f"unsupported expression: {source!r} at {source[position:]!r}"
            position = match.end()
            kind = match.lastgroup
            text = match.group(kind or "")
            if kind == "str":
                pieces.append(repr(json.loads(text)))
            elif kind == "path":
                pieces.append(f"_get({text!r})" if text not in ("attributes", "resource", "body") else f"_{text}()")
            elif kind == "word":
                pieces.append({"nil": "None", "matches": "@"}.get(text, text))
            else:
                pieces.append(text)
        python = " ".join(pieces)
        python = re.sub(r"(\S+) @ (\S+)", r"_matches(\1, \2)", python)
        self.python = python

    def __call__(self, entry: Entry) -> bool:
        namespace: dict[str, Callable[..., Any]] = {
            "_get": lambda text: fetch(entry, text),
            "_attributes": lambda: entry.attributes,
            "_resource": lambda: entry.resource,
            "_body": lambda: entry.body,
            "_matches": lambda value, pattern: isinstance(value, str) and re.search(pattern, value) is not None,
        }
        result = eval(self.python, {"__builtins__": {}}, namespace)
        assert isinstance(result, bool), f"{self.source} is not a condition"
        return result


def fetch(entry: Entry, text: str) -> Any:
    """An expr-lang member chain: nil for a key a map lacks; fetching from nil or a non-map is an error."""
    prefix, keys = split_field(text)
    value: Any = {"attributes": entry.attributes, "resource": entry.resource, "body": entry.body}[prefix]
    for key in keys:
        if not isinstance(value, dict):
            raise ExprError(f"cannot fetch {key} from {type(value).__name__} in {text}")
        value = value.get(key)
    return value


class ExprError(Exception):
    """expr-lang failed at run time: stanza logs it and skips the operator (a finding, never expected here)."""


class OperatorError(Exception):
    """A failed operator: with on_error send/send_quiet the entry goes on as it was."""


def go_time(layout: str, value: str) -> int:
    python = layout
    for go, strftime in _GO_LAYOUT:
        python = python.replace(go, strftime)
    assert "0" not in python.replace("%", ""), f"layout token not interpreted: {layout}"
    parsed = datetime.strptime(value, python)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


class Chain:
    """The receiver's operators, in order, over one file's json-file lines."""

    KNOWN: ClassVar[set[str]] = {"container", "filter", "recombine", "move", "remove", "json_parser", "time_parser",
             "severity_parser", "trace_parser", "scope_name_parser"}

    def __init__(self, receiver: dict[str, Any]) -> None:
        self.receiver = receiver
        self.operators = receiver["operators"]
        unknown = {op["type"] for op in self.operators} - self.KNOWN
        assert not unknown, f"the interpreter does not know {unknown}: interpret them before using them"
        self._pending: dict[str, Entry] = {}

    def run(self, lines: list[str], path: str = LOG_PATH) -> list[Entry]:
        records = []
        for line in lines:
            entry = Entry(body=line)
            if self.receiver.get("include_file_path"):
                entry.attributes["log.file.path"] = path
            records.extend(self._from(0, entry))
        return records

    def _from(self, index: int, entry: Entry) -> list[Entry]:
        for position in range(index, len(self.operators)):
            op = self.operators[position]
            condition = op.get("if")
            if condition is not None and not Expr(condition)(entry):
                continue
            if op["type"] == "filter":
                if Expr(op["expr"])(entry):
                    return []
                continue
            if op["type"] == "recombine":
                combined = self._recombine(op, entry)
                if combined is None:
                    return []
                entry = combined
                continue
            try:
                getattr(self, "_" + op["type"])(op, entry)
            except OperatorError:
                if op.get("on_error", "send") not in ("send", "send_quiet"):
                    return []
        return [entry]

    def _recombine(self, op: dict[str, Any], entry: Entry) -> Entry | None:
        source = str(get(entry, op["source_identifier"])[0])
        pending = self._pending.get(source)
        if pending is None:
            pending = entry  # overwrite_with: oldest (the default): the first part's fields
        else:
            pending.body = pending.body + op.get("combine_with", "\n") + entry.body
        if Expr(op["is_last_entry"])(entry):
            self._pending.pop(source, None)
            return pending
        self._pending[source] = pending
        return None

    def _container(self, op: dict[str, Any], entry: Entry) -> None:
        assert op["format"] == "docker"
        assert op["add_metadata_from_filepath"] is False
        parsed = json.loads(entry.body)  # parseDocker
        put(entry, "attributes", parsed)
        entry.timestamp = go_time("2006-01-02T15:04:05.000Z07:00", parsed["time"][:23] + "Z")
        put(entry, "body", delete(entry, "attributes.log")[0])
        put(entry, 'attributes["log.iostream"]', delete(entry, "attributes.stream")[0])

    def _move(self, op: dict[str, Any], entry: Entry) -> None:
        value, found = delete(entry, op["from"])
        if not found:
            raise OperatorError(op["from"])
        put(entry, op["to"], value)

    def _remove(self, op: dict[str, Any], entry: Entry) -> None:
        if not delete(entry, op["field"])[1]:
            raise OperatorError(op["field"])

    def _json_parser(self, op: dict[str, Any], entry: Entry) -> None:
        value, found = get(entry, op.get("parse_from", "body"))
        if not found:
            raise OperatorError("parse_from")
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise OperatorError(str(exc)) from None
        if not op.get("parse_ints", False):  # jsoniter: every number a float64 unless parse_ints
            parsed = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in parsed.items()}
        put(entry, op.get("parse_to", "attributes"), parsed)

    def _time_parser(self, op: dict[str, Any], entry: Entry) -> None:
        assert op["layout_type"] == "gotime"
        value, found = get(entry, op["parse_from"])
        if not found:
            raise OperatorError("parse_from")
        entry.timestamp = go_time(op["layout"], value)

    def _severity_parser(self, op: dict[str, Any], entry: Entry) -> None:
        mapping = dict(_DEFAULT_MAPPING) if op.get("preset") in (None, "default") else {}
        for severity, values in (op.get("mapping") or {}).items():
            for value in values if isinstance(values, list) else [values]:
                mapping[str(value).lower()] = _SEVERITIES[severity]
        value, found = get(entry, op["parse_from"])
        if not found:
            raise OperatorError("parse_from")
        entry.severity = mapping.get(str(value).lower(), 0)
        entry.severity_text = _SEVERITY_TEXT[entry.severity] if op.get("overwrite_text") and entry.severity \
            else str(value)

    def _trace_parser(self, op: dict[str, Any], entry: Entry) -> None:
        for key in ("trace_id", "span_id"):
            value, found = get(entry, op[key]["parse_from"])
            if found:
                bytes.fromhex(str(value))  # hex.DecodeString: an error otherwise
                setattr(entry, key, str(value))
        assert "trace_flags" not in op

    def _scope_name_parser(self, op: dict[str, Any], entry: Entry) -> None:
        value, found = get(entry, op["parse_from"])
        if not found:
            raise OperatorError("parse_from")
        entry.scope = str(value)


def receiver_config() -> dict[str, Any]:
    return yaml.safe_load(OVERLAY.read_text())["receivers"]["filelog/containers"]  # type: ignore[no-any-return]


def shipped(run: Run) -> list[Entry]:
    attrs = {"OTEL_SERVICE_NAME": run.env["OTEL_SERVICE_NAME"], "QM_OTEL_ENVIRONMENT": run.env["QM_OTEL_ENVIRONMENT"]}
    written = [part for line in run.lines for part in docker_lines(line, attrs)]
    return Chain(receiver_config()).run(written)


# --- the tests -------------------------------------------------------------------------------------


def qm_otel_lines(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.lines if line.startswith("{")]


def test_every_field_the_chain_reads_is_in_real_lines_with_the_expected_values(run: Run) -> None:
    lines = qm_otel_lines(run)
    ours = {line["message"]: line for line in lines if line["logger"] == "shop.orders"}
    assert set(ours) >= MESSAGES - {"CACHE warm SUCCESS"}
    read = set()
    for op in receiver_config()["operators"]:
        for key in ("parse_from", "from", "field"):
            if isinstance(op.get(key), str) and op[key].startswith("attributes"):
                read.add(split_field(op[key])[1][0])
        for key in ("trace_id", "span_id"):
            if key in op:
                read.add(split_field(op[key]["parse_from"])[1][0])
    docker_fields = {"attrs", "time", "log.file.path", "log.iostream"}
    produced = {"user.id", "user.name", "url.query", "code.function.name", "code.line.number"}
    every_key = {key for line in lines for key in line}
    assert read - docker_fields - produced - every_key == set(), "a field the chain reads is not in qm-otel's lines"
    # the values the chain parses and compares
    layout = receiver_config()["operators"]
    [time_op] = [op for op in layout if op["type"] == "time_parser"]
    for line in lines:
        go_time(time_op["layout"], line["timestamp"])  # every timestamp parses with the layout
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert line["trace_id"] is None or re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert line["span_id"] is None or re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert line["service"] == "shop"
        assert "correlation_id" in line
        assert "duration_ms" in line
        assert "event" in line
        if line["event"] is None:  # an ordinary record: the defaults the chain drops
            assert (line["component"], line["action"]) == ("SYSTEM", "LOG")
            assert line["status"] in ("INFO", "FAILURE")
    failed = ours["division failed"]
    assert set(failed["exception"]) == {"type", "message", "stack"}
    assert {"module", "function", "line"} <= set(ours["item looked up"])
    requests = [line for line in lines if line["logger"] == "qm_otel.requests"]
    user = next(line for line in requests if line.get("url_path") == "/user")
    assert (user["user_id"], user["user_name"], user["query"]) == ("u-7", "Grace", "q=1")
    assert "module" not in user  # a record qm-otel writes itself has no code location


def typed(value: Any) -> Any:
    """``value`` with each leaf's type beside it: 7 is not 7.0 (an int and a double attribute), True is not 1."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def test_the_filelog_records_equal_the_otlp_records(run: Run) -> None:
    records = shipped(run)
    assert run.exported
    compared = set()
    for exported in run.exported:
        matches = [r for r in records if r.scope == exported.scope and r.body == exported.body
                   and abs(r.timestamp - exported.time_unix_nano) <= 1_000_000]
        assert len(matches) == 1, f"no single filelog record for {exported.scope}: {exported.body!r}"
        [record] = matches
        assert (record.severity_text, record.severity) == (exported.severity_text, exported.severity_number)
        assert (record.trace_id, record.span_id) == (exported.trace_id, exported.span_id)
        assert set(record.resource) == {"service.name", "deployment.environment.name"}
        assert record.resource.items() <= exported.resource.items()
        otlp = dict(exported.attributes)
        otlp.pop("code.file.path", None)  # the line has the module name, not the file path
        mine = dict(record.attributes)
        for attrs in (otlp, mine):  # the line's stack has no final newline (logging.Formatter.formatException)
            if "exception.stacktrace" in attrs:
                attrs["exception.stacktrace"] = attrs["exception.stacktrace"].rstrip("\n")
        assert typed(mine) == typed(otlp), f"{exported.body!r}: attributes differ"
        compared.add(exported.body)
    assert compared >= MESSAGES
    severities = {r.body: (r.severity_text, r.severity) for r in records}
    assert severities["stock low"] == ("WARN", 13)
    assert severities["stock gone"] == ("FATAL", 21)
    assert severities["payment declined"] == ("ERROR", 17)
    request = next(r for r in records if r.scope == "qm_otel.requests" and r.attributes.get("url_path") == "/user")
    assert request.attributes["user.id"] == "u-7"
    assert "user_id" not in request.attributes
    assert request.attributes["correlation_id"] == "order-1"
    long = next(r for r in records if r.body == "long line")
    assert long.attributes["blob"] == LONG  # split by Docker into two parts, joined again


def test_lines_that_are_not_json_arrive_as_plain_bodies_and_other_containers_are_dropped(run: Run) -> None:
    attrs = {"OTEL_SERVICE_NAME": "shop"}
    crash = ["Traceback (most recent call last):", '  File "/app/main.py", line 1, in <module>',
             "ModuleNotFoundError: No module named 'shop'", "{not json"]
    written = [part for line in crash for part in docker_lines(line, attrs, stream="stderr")]
    written += docker_lines(json.dumps({"level": "info", "msg": "loki's own line"}), None)  # not opted in
    records = Chain(receiver_config()).run(written)
    assert [r.body for r in records] == [line + "\n" for line in crash]
    for record in records:
        assert record.resource == {"service.name": "shop"}
        assert record.attributes == {"log.iostream": "stderr"}
        assert record.timestamp == go_time("2006-01-02T15:04:05.000Z07:00", "2026-05-26T10:00:00.123Z")
        assert (record.severity, record.scope, record.trace_id) == (0, "", "")


def test_the_interpreter_refuses_what_it_does_not_know() -> None:
    with pytest.raises(AssertionError, match="unsupported expression"):
        Expr("attributes.a > 3")
    with pytest.raises(AssertionError, match="does not know"):
        Chain({"operators": [{"type": "regex_parser"}]})
    assert Expr('"k" in attributes and attributes["a.b"] == nil')(Entry(body="", attributes={"k": 1}))
    assert Expr('body matches "^\\\\{"')(Entry(body="{x"))
    assert not Expr('attributes.s in ["INFO", "FAILURE"]')(Entry(body="", attributes={"s": "SUCCESS"}))
