"""The stack's links between signals (issue 23, items 1 and 5), checked against the provisioned YAML.

- Tempo → Loki: the Tempo datasource's ``tracesToLogsV2`` is a custom query (Grafana returns it
  verbatim; its default depends on the Grafana release) whose only filter is a label filter on the
  ``trace_id`` structured-metadata field — parsed with Grafana's LogQL grammar
  (@grafana/lezer-logql) after interpolation with Grafana's variable pattern and scoped variables;
- Loki → Tempo: the Loki derived field is a label matcher that finds ``trace_id`` (Loki keeps it as
  structured metadata: collector/loki.yaml indexes only service.name and deployment.environment);
- Prometheus → Tempo: the exemplar destinations name ``trace_id``, the label Prometheus's OTLP
  translator gives exemplars (storage/remote/otlptranslator/prometheusremotewrite/helper.go:59 at
  v3.13.1), and ``traceID``, Tempo's metrics-generator default (modules/generator/registry/histogram.go:72);
- scripts/verify-stack runs those same queries: its checks run here against recorded answers shaped
  like the real APIs, and every request they send is compared with the YAML.

What only a running stack shows (scripts/verify-stack): that Grafana renders the links, that Loki
answers the query with the records, that the SDK's exemplar reservoir keeps an exemplar.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qm_otel.cli.links import (
    GRAFANA_VARIABLE,
    LinkBroken,
    Links,
    StackLinks,
    exemplar_query,
    interpolate,
    load_links,
    logs_query,
    main,
    span_variables,
    trace_spans,
)
from qm_otel.core.correlation import trace_id_for
from tests.support.logql import grammar_dir

ROOT = Path(__file__).resolve().parents[2]
DATASOURCES = ROOT / "dashboards/provisioning/datasources/datasources.yaml"
VERIFY = ROOT / "scripts/verify-stack"
CORRELATION_ID = "0af76519-16cd-43dd-8448-eb211c80319c"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ROOT_SPAN = "b7ad6b7169203331"
SERVICE = "qm-demo"
#: the fields of Grafana's scopedVarsFromSpan / scopedVarsFromTrace (createSpanLink.tsx, createTraceLink.ts)
SPAN_FIELDS = {"__span": {"spanId", "traceId", "duration", "name", "tags"}, "__trace": {"traceId", "duration", "name"}}


def datasources() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


@pytest.fixture(scope="module")
def links() -> Links:
    return load_links(DATASOURCES)


# ---- Grafana's LogQL grammar ---------------------------------------------------------------------------

_SHAPE = """
const { parser } = require("@grafana/lezer-logql");
const exprs = JSON.parse(require("fs").readFileSync(0, "utf8"));
const text = (expr, node) => node ? expr.slice(node.from, node.to) : null;
process.stdout.write(JSON.stringify(exprs.map((expr) => {
  const shape = { errors: [], selector: [], labelFilters: [], lineFilters: 0, otherStages: [] };
  parser.parse(expr).iterate({ enter: (ref) => {
    if (ref.type.isError) shape.errors.push(ref.from);
    if (ref.name === "LineFilter") shape.lineFilters += 1;
    if (["LabelFormatExpr", "LineFormatExpr", "LabelParser", "JsonExpressionParser", "DropLabelsExpr"]
        .includes(ref.name)) shape.otherStages.push(ref.name);
    if (ref.name === "Matcher") {
      const node = ref.node;
      const where = node.parent.name === "Matchers" ? shape.selector : shape.labelFilters;
      const op = node.firstChild.nextSibling;
      const value = JSON.parse(text(expr, node.getChild("String")));
      where.push([text(expr, node.getChild("Identifier")), text(expr, op), value]);
    }
  }});
  return shape;
})));
"""


@pytest.fixture(scope="module")
def logql_grammar() -> Path:
    return grammar_dir()


def logql_shapes(grammar: Path, exprs: list[str]) -> list[dict[str, Any]]:
    parsed = subprocess.run(["node", "-e", _SHAPE], cwd=grammar, input=json.dumps(exprs), capture_output=True,
                            text=True, check=True, timeout=60)
    return list(json.loads(parsed.stdout))


def trace_to_logs_problems(shape: dict[str, Any], trace_id: str) -> list[str]:
    """What keeps a Tempo → Loki query from finding qm-otel's OTLP records of ``trace_id``."""
    problems = []
    if shape["errors"]:
        problems.append(f"does not parse (error at {shape['errors']})")
    if shape["selector"] != [["service_name", "=", SERVICE]]:
        problems.append(f"stream selector {shape['selector']} is not the service's service_name label")
    if shape["labelFilters"] != [["trace_id", "=", trace_id]]:
        problems.append(f"label filters {shape['labelFilters']} are not trace_id = the trace ID")
    if shape["lineFilters"]:
        problems.append("filters the line (the OTLP body is the message alone; the ID is structured metadata)")
    if shape["otherStages"]:
        problems.append(f"runs {shape['otherStages']} on every line before filtering")
    return problems


@pytest.mark.integration
def test_tempo_to_loki_is_a_custom_query_on_the_trace_id_field(links: Links, logql_grammar: Path) -> None:
    to_logs = datasources()["tempo"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    assert to_logs["customQuery"] is True  # else Grafana builds its default from filterByTraceID and tags
    query = logs_query(links, trace_id=TRACE_ID, span_id=ROOT_SPAN, tags={"service.name": SERVICE})
    [shape] = logql_shapes(logql_grammar, [query])
    assert trace_to_logs_problems(shape, TRACE_ID) == [], query


@pytest.mark.integration
def test_the_check_fails_on_the_queries_that_find_nothing_or_too_much(logql_grammar: Path) -> None:
    broken = {
        f'{{service_name="{SERVICE}"}} |= "{TRACE_ID}"': "filters the line",  # Grafana <= 11's default
        f'{{service_name="{SERVICE}"}}': "label filters [] are not",  # the tags alone: every log of the service
        f'{{service_name="{SERVICE}"}} | span_id="{ROOT_SPAN}"': "are not trace_id",
        f'{{service_name="{SERVICE}"}} | label_format t=`{{{{ contains "{TRACE_ID}" __line__ }}}}` | t="true" '
        f'or trace_id="{TRACE_ID}"': "runs ['LabelFormatExpr']",
        f'{{service_name="{SERVICE}" | trace_id="{TRACE_ID}"': "does not parse",
    }
    shapes = logql_shapes(logql_grammar, list(broken))
    for (query, expected), shape in zip(broken.items(), shapes, strict=True):
        problems = trace_to_logs_problems(shape, TRACE_ID)
        assert any(expected in p for p in problems), (query, problems)


def test_the_custom_query_uses_only_variables_grafana_defines_for_a_span(links: Links) -> None:
    used = list(GRAFANA_VARIABLE.finditer(links.logs_query))
    assert used
    for match in used:
        name, path = match.group(4), match.group(5)
        assert name in SPAN_FIELDS, f"{match.group(0)}: Grafana defines only ${{__span.*}} / ${{__trace.*}} here"
        assert path.split(".")[0].split("[")[0] in SPAN_FIELDS[name], match.group(0)
    # a dotted tag is addressed with brackets: lodash's path reads tags.service.name as three keys
    assert '${__span.tags["service.name"]}' in links.logs_query
    with pytest.raises(KeyError, match="undefined"):  # Grafana hides the link rather than query an empty label
        interpolate(links.logs_query, span_variables(TRACE_ID, ROOT_SPAN, {}))
    with pytest.raises(KeyError, match="undefined"):  # without brackets: tags -> service -> name, no such key
        interpolate("${__span.tags.service.name}", span_variables(TRACE_ID, ROOT_SPAN, {"service.name": "x"}))


def test_the_yaml_escapes_every_dollar_and_the_range_surrounds_the_span(links: Links) -> None:
    raw = datasources()["tempo"]["jsonData"]["tracesToLogsV2"]["query"]
    assert "$" not in raw.replace("$${", "")  # Grafana's provisioning expands a single $ as an env variable
    assert links.logs_query == raw.replace("$$", "$")
    assert links.start_shift_s < 0 < links.end_shift_s  # clock skew between service, collector and Loki
    loki = yaml.safe_load((ROOT / "collector/loki.yaml").read_text())
    indexed = {a for rule in loki["limits_config"]["otlp_config"]["resource_attributes"]["attributes_config"]
               if rule["action"] == "index_label" for a in rule["attributes"]}
    assert "service.name" in indexed  # the selector's label exists; trace_id is structured metadata, not indexed
    assert not any("trace" in a for a in indexed)


def test_loki_to_tempo_derived_field_matches_the_structured_metadata_key() -> None:
    [field] = datasources()["loki"]["jsonData"]["derivedFields"]
    assert (field["matcherType"], field["datasourceUid"]) == ("label", "tempo")
    assert "url: '$${__value.raw}'" in DATASOURCES.read_text()  # the value itself is the Tempo query
    # Grafana's label matcher takes the first key its regex finds (getDerivedFields.ts: regex.test(key))
    keys = ["service_name", "deployment_environment", "span_id", "correlation_id", "severity_text", "component",
            "event", "flags", "trace_id", "http_route"]
    assert [k for k in keys if re.search(field["matcherRegex"], k)] == ["trace_id"]


def test_exemplar_destinations_name_the_labels_the_metric_paths_write() -> None:
    destinations = datasources()["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    names = {d["name"]: d["datasourceUid"] for d in destinations}
    assert names == {"trace_id": "tempo", "traceID": "tempo"}
    exporter = yaml.safe_load((ROOT / "collector/otel-collector.yaml").read_text())
    assert exporter["service"]["pipelines"]["metrics"]["exporters"] == ["otlp_http/prometheus"]
    assert exporter["exporters"]["otlp_http/prometheus"]["endpoint"].endswith("/api/v1/otlp")  # OTLP → trace_id
    tempo = yaml.safe_load((ROOT / "collector/tempo.yaml").read_text())
    assert "trace_id_label_name" not in json.dumps(tempo)  # the generator keeps its default, traceID
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command


# ---- scripts/verify-stack and its checks, on recorded answers ------------------------------------------

def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def tempo_answer(trace_id: str) -> dict[str, Any]:
    """A Tempo /api/v2/traces answer: OTLP JSON, IDs as base64 (gogo/jsonpb bytes), times as strings."""
    attribute = {"key": "service.name", "value": {"stringValue": SERVICE}}
    spans = [{"traceId": _b64(trace_id), "spanId": _b64(ROOT_SPAN), "name": "GET /items/{item_id}",
              "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "1700000000000000000",
              "endTimeUnixNano": "1700000000004000000",
              "attributes": [{"key": "http.route", "value": {"stringValue": "/items/{item_id}"}}]},
             {"traceId": _b64(trace_id), "spanId": _b64("00f067aa0ba902b7"), "parentSpanId": _b64(ROOT_SPAN),
              "name": "lookup", "startTimeUnixNano": "1700000000001000000", "endTimeUnixNano": "1700000000002000000"}]
    return {"trace": {"resourceSpans": [{"resource": {"attributes": [attribute]},
                                         "scopeSpans": [{"scope": {"name": "qm_otel"}, "spans": spans}]}]}}


def loki_answer(trace_id: str) -> dict[str, Any]:
    """A /loki/api/v1/query_range answer with categorize-labels: metadata beside each line."""
    metadata = {"trace_id": trace_id, "span_id": ROOT_SPAN, "severity_text": "INFO", "correlation_id": CORRELATION_ID}
    return {"status": "success", "data": {"resultType": "streams", "encodingFlags": ["categorize-labels"], "result": [
        {"stream": {"service_name": SERVICE, "deployment_environment": "compose"},
         "values": [["1700000000002000000", "item 1 looked up", {"structuredMetadata": metadata}],
                    ["1700000000003000000", "GET /items/1 200", {"structuredMetadata": metadata}]]}]}}


def exemplars_answer(trace_id: str) -> dict[str, Any]:
    """A /api/v1/query_exemplars answer (model/exemplar/exemplar.go, web/api/v1/json_codec.go at v3.13.1)."""
    series = {"__name__": "http_server_request_duration_seconds_bucket", "service_name": SERVICE, "le": "0.005"}
    exemplar = {"labels": {"trace_id": trace_id, "span_id": ROOT_SPAN}, "value": "0.004", "timestamp": 1700000000.0}
    return {"status": "success", "data": [{"seriesLabels": series, "exemplars": [exemplar]}]}


class Stack:
    """httpx transport answering like the stack; records every request, answers can be swapped out."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.tempo: Callable[[str], dict[str, Any]] = tempo_answer
        self.loki: Callable[[str], dict[str, Any]] = loki_answer
        self.exemplars: Callable[[str], dict[str, Any]] = exemplars_answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/items/1":
            echoed = {"X-Correlation-ID": request.headers["x-correlation-id"]}
            return httpx.Response(200, json={"id": 1}, headers=echoed)
        if path.startswith("/api/v2/traces/"):
            return httpx.Response(200, json=self.tempo(path.rsplit("/", 1)[1]))
        if path == "/loki/api/v1/query_range":
            return httpx.Response(200, json=self.loki(TRACE_ID))
        if path == "/api/v1/query_exemplars":
            return httpx.Response(200, json=self.exemplars(TRACE_ID))
        return httpx.Response(404)


def checker(links: Links, stack: Stack) -> StackLinks:
    client = httpx.Client(transport=httpx.MockTransport(stack))
    ticks = iter(range(1_700_000_000, 1_800_000_000, 5))
    return StackLinks(links, client, demo="http://demo", tempo="http://tempo", loki="http://loki",
                      prometheus="http://prometheus", timeout_s=10, sleep=lambda _s: None, clock=lambda: next(ticks))


def test_verify_stack_sends_the_datasources_queries_and_passes_on_a_working_stack(links: Links) -> None:
    assert format(trace_id_for(CORRELATION_ID), "032x") == TRACE_ID  # a UUID correlation ID is the trace ID
    stack, lines = Stack(), list[str]()
    checker(links, stack).run(CORRELATION_ID, out=lines.append)
    by_path = {r.url.path: r for r in stack.requests}
    loki = by_path["/loki/api/v1/query_range"]
    template = datasources()["tempo"]["jsonData"]["tracesToLogsV2"]["query"].replace("$$", "$")
    expected = template.replace('${__span.tags["service.name"]}', SERVICE).replace("${__span.traceId}", TRACE_ID)
    assert loki.url.params["query"] == expected  # the datasource's query, not a copy of it
    assert int(loki.url.params["start"]) == 1700000000000000000 + int(links.start_shift_s * 1e9)
    assert int(loki.url.params["end"]) == 1700000000004000000 + int(links.end_shift_s * 1e9)
    assert f"/api/v2/traces/{TRACE_ID}" in by_path
    assert by_path["/api/v1/query_exemplars"].url.params["query"] == exemplar_query(SERVICE)
    assert by_path["/items/1"].headers["x-correlation-id"] == CORRELATION_ID
    assert [line.split()[1] for line in lines] == ["request", "Tempo", "Tempo", "Loki", "Prometheus"]


@pytest.mark.parametrize(("breakage", "link"), [
    ("loki_empty", "Tempo → Loki"),
    ("metadata_missing", "Loki → Tempo"),
    ("no_exemplars", "Prometheus → Tempo (exemplars"),
    ("exemplar_trace_gone", "Prometheus → Tempo: the exemplar's trace"),
    ("trace_missing", "trace in Tempo"),
])
def test_a_broken_link_fails_naming_it(links: Links, breakage: str, link: str) -> None:
    stack = Stack()
    other = "4bf92f3577b34da6a3ce929d0e0e4736"
    if breakage == "loki_empty":
        stack.loki = lambda _t: {"status": "success", "data": {"resultType": "streams", "result": []}}
    elif breakage == "metadata_missing":  # records found, but the derived field finds no trace_id on them
        values = [["1", "line", {"structuredMetadata": {"span_id": "x"}}]]
        stack.loki = lambda _t: {"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"service_name": SERVICE}, "values": values}]}}
    elif breakage == "no_exemplars":
        stack.exemplars = lambda _t: {"status": "success", "data": []}
    elif breakage == "exemplar_trace_gone":
        stack.exemplars = lambda _t: exemplars_answer(other)
        stack.tempo = lambda t: tempo_answer(t) if t == TRACE_ID else {"trace": {}}
    else:
        stack.tempo = lambda _t: {"trace": {}}
    with pytest.raises(LinkBroken, match=re.escape(link)):
        checker(links, stack).run(CORRELATION_ID, out=lambda _line: None)


def test_trace_answers_parse_with_hex_or_base64_ids() -> None:
    [root, child] = trace_spans(tempo_answer(TRACE_ID))
    assert (root.trace_id, root.span_id, root.parent_span_id) == (TRACE_ID, ROOT_SPAN, "")
    assert root.tags == {"service.name": SERVICE, "http.route": "/items/{item_id}"}
    assert child.parent_span_id == ROOT_SPAN
    v1 = {"batches": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [
        {"traceId": TRACE_ID, "spanId": ROOT_SPAN, "startTimeUnixNano": 1, "endTimeUnixNano": 2}]}]}]}
    assert trace_spans(v1)[0].trace_id == TRACE_ID
    assert trace_spans({"trace": None}) == []


@pytest.mark.integration
def test_verify_stack_is_valid_bash_and_runs_the_checks(capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["bash", "-n", str(VERIFY)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        subprocess.run([shellcheck, str(VERIFY)], check=True)
    script = VERIFY.read_text()
    assert '-m qm_otel.cli.links --correlation-id "$correlation_id"' in script
    assert "exec \"$python\" -m qm_otel.cli.links --dry-run" in script
    assert main(["--dry-run", "--correlation-id", CORRELATION_ID, "--datasources", str(DATASOURCES)]) == 0
    printed = capsys.readouterr().out
    assert f'{{service_name="{SERVICE}"}} | trace_id="{TRACE_ID}"' in printed
    assert exemplar_query(SERVICE) in printed
