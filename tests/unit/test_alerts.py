"""Alert rules (issue 15, items 2, 4, 5): every rule complete and tested, thresholds from the conventions,
promtool's check and unit tests, the Loki rules checked as far as the tools here allow.

What is not validated for the Loki rules: that Loki's own parser accepts them (no Loki binary
here: Debian's is 2.4 and Loki 3's Go module is AGPL) and that they match records in a live Loki.
Checked instead: the rule-file structure, a LogQL sanity check (balanced brackets and quotes, a
stream selector, a range, grouped by service_name) and a parse by Grafana's LogQL grammar
(@grafana/lezer-logql, the parser Grafana's query editor uses) with no error node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qm_otel.cli.render import LOKI_RULES, RULE_TESTS, RULES, render_all
from qm_otel.cli.render.alerts import loki_rules, prometheus_rules
from qm_otel.cli.render.alerts._prometheus import burn_factors, slow_bucket_edge
from qm_otel.cli.render.alerts._rule import duration
from qm_otel.core.conventions import ConventionsError, conventions, load_with_overrides
from tests.support.logql import grammar_dir

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs/runbooks.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                    reason="promtool (Debian package prometheus) not installed")


def rule_file(path: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load((ROOT / path).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def all_rules() -> list[dict[str, Any]]:
    return rule_file(RULES) + rule_file(LOKI_RULES)


def test_at_least_twelve_rules_cover_the_issues_list() -> None:
    names = {rule["alert"] for rule in all_rules()}
    assert len(names) >= 12
    assert names >= {
        "QmOtelHighErrorRate", "QmOtelSlowResponses", "QmOtelLowCacheHitRate", "QmOtelHighMemory",
        "QmOtelSlowStartup", "QmOtelCircuitBreakerOpen", "QmOtelCircuitBreakerFlapping", "QmOtelDegradedMode",
        "QmOtelServiceAbsent", "QmOtelTelemetryDropped", "QmOtelCollectorExportFailing", "QmOtelSlowRequests",
        "QmOtelErrorBudgetFastBurn", "QmOtelErrorBudgetSlowBurn", "QmOtelErrorLogRate", "QmOtelEventLoopBlocked",
    }


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule["alert"])
def test_every_rule_has_for_severity_summary_a_description_with_its_value_and_a_runbook(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smhd]", rule["for"])
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert re.search(r'\{\{ \$value \| printf "%\.\df" \}\}', annotations["description"])
    base = conventions().alert_policy.runbook_base_url
    assert annotations["runbook_url"] == f"{base}#{rule['alert'].lower()}"


def runbook_sections() -> dict[str, str]:
    """docs/runbooks.md's ``## `` sections by GitHub anchor (lower case, spaces to dashes, no punctuation)."""
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", RUNBOOKS.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        sections[anchor] = body
    return sections


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule["alert"])
def test_every_runbook_anchor_is_a_section_that_justifies_for_and_says_what_to_do(rule: dict[str, Any]) -> None:
    sections = runbook_sections()
    anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
    assert anchor in sections, f"docs/runbooks.md has no section for #{anchor}"
    body = sections[anchor]
    assert f"`for: {rule['for']}`" in body, f"#{anchor} does not justify for: {rule['for']}"
    assert "**What to do**" in body
    assert "**Check**" in body


def test_rules_carry_the_conventions_thresholds() -> None:
    rules = {r["alert"]: r for r in rule_file(RULES)}
    c = conventions()
    alerts = c.alerts
    assert rules["QmOtelHighErrorRate"]["expr"].endswith(f"> {alerts['error_rate_percent_above']:g}")
    assert rules["QmOtelSlowResponses"]["expr"].endswith(f"> {alerts['response_time_ms_above']:g}")
    assert rules["QmOtelLowCacheHitRate"]["expr"].endswith(f"< {alerts['cache_hit_rate_percent_below']:g}")
    assert rules["QmOtelHighMemory"]["expr"].endswith(f"> {alerts['memory_mb_above']:g}")
    assert rules["QmOtelSlowStartup"]["expr"].endswith(f"> {c.bands['bootstrap'].warning:g}")
    assert rules["QmOtelCircuitBreakerOpen"]["for"] == duration(2 * c.breaker.recovery_s) == "1m"
    assert rules["QmOtelSlowRequests"]["expr"].endswith(f"> {c.alert_policy.slow_request_percent_above:g}")
    assert rules["QmOtelCircuitBreakerFlapping"]["expr"].endswith(
        f"[{c.alert_policy.breaker_flap_window_minutes}m])) >= {c.alert_policy.breaker_flap_openings}")
    blocked = rules["QmOtelEventLoopBlocked"]
    assert blocked["expr"] == ("60 * sum by (service_name) (rate(qm_otel_event_loop_blocked_total[5m])) > "
                               f"{c.alert_policy.event_loop_stalls_per_minute_above:g}")
    assert blocked["for"] == "10m"  # sustained: a burst of stalls (a cold start) stays pending
    assert f"default {c.bands['response_time'].warning:g} ms" in blocked["annotations"]["description"]


def test_the_breaker_alert_counts_half_open_as_not_closed() -> None:
    """Issue 15, item 2: ``state="OPEN"`` let every HALF_OPEN sample reset the for: timer."""
    expr = {r["alert"]: r for r in rule_file(RULES)}["QmOtelCircuitBreakerOpen"]["expr"]
    assert 'state!="CLOSED"' in expr
    assert 'state="OPEN"' not in expr


def test_the_burn_rates_are_the_sre_workbooks() -> None:
    assert [(speed, round(factor, 6), long, short) for speed, factor, long, short in burn_factors(conventions())] == [
        ("fast", 14.4, "1h", "5m"), ("fast", 6, "6h", "30m"), ("slow", 3, "1d", "2h"), ("slow", 1, "3d", "6h")]
    rules = {r["alert"]: r for r in rule_file(RULES)}
    assert "/ 0.001 > 14.4" in rules["QmOtelErrorBudgetFastBurn"]["expr"]  # 99.9 %: a 0.1 % budget


def test_a_changed_policy_moves_the_rules_and_their_tests(tmp_path: Path) -> None:
    override = tmp_path / "ours.toml"
    override.write_text("[alert_policy]\nslo_availability_percent = 99.5\nbreaker_flap_openings = 5\n"
                        "runbook_base_url = \"https://runbooks.example/qm-otel.md\"\n"
                        "event_loop_stalls_per_minute_above = 4\n"
                        "[breaker]\nrecovery_s = 45\n[requests]\nslow_ms = 5000\n")
    c = load_with_overrides(str(override))
    files = render_all(c)
    rules = {r["alert"]: r for r in yaml.safe_load(files[RULES])["groups"][0]["rules"]}
    assert "/ 0.005 > 14.4" in rules["QmOtelErrorBudgetFastBurn"]["expr"]
    assert rules["QmOtelCircuitBreakerFlapping"]["expr"].endswith(">= 5")
    assert rules["QmOtelCircuitBreakerOpen"]["for"] == "90s"
    assert 'le=~"5|5[.]0"' in rules["QmOtelSlowRequests"]["expr"]
    assert slow_bucket_edge(5000) == 5.0
    assert rules["QmOtelHighErrorRate"]["annotations"]["runbook_url"] == (
        "https://runbooks.example/qm-otel.md#qmotelhigherrorrate")
    assert "duration_ms > 5000" in files[LOKI_RULES]
    assert rules["QmOtelEventLoopBlocked"]["expr"].endswith("[5m])) > 4")
    tests = yaml.safe_load(files[RULE_TESTS])["tests"]
    blocked = next(t for t in tests if t["alert_rule_test"][0]["alertname"] == "QmOtelEventLoopBlocked")
    assert blocked["input_series"][0]["values"] == "0+2.5x20 50x20"  # (4 + 1) / 2 a minute in each of two


def test_every_prometheus_rule_has_a_promtool_test() -> None:
    tests = yaml.safe_load((ROOT / RULE_TESTS).read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == {rule.alert for rule in prometheus_rules(conventions())}
    for test in tests:  # fires (a non-empty expectation) and resolves or stays silent (an empty one)
        expectations = [bool(case["exp_alerts"]) for case in test["alert_rule_test"]]
        assert True in expectations, test["name"]
        assert False in expectations, test["name"]


@needs_promtool
@pytest.mark.integration
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run([str(PROMTOOL), "check", "rules", str(ROOT / RULES)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(prometheus_rules(conventions()))} rules found" in check.stdout
    tests = subprocess.run([str(PROMTOOL), "test", "rules", RULE_TESTS], cwd=ROOT, capture_output=True, text=True,
                           check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr


#: QmOtelEventLoopBlocked's for: as the rule file holds it (the line after its expression)
_BLOCKED_FOR = "blocked_total[5m])) > 1\n    for: {}\n"


@needs_promtool
@pytest.mark.parametrize(("before", "after", "alert"), [
    ("> 5\n", "> 7\n", "QmOtelHighErrorRate"),
    ('state!="CLOSED"', 'state="OPEN"', "QmOtelCircuitBreakerOpen"),  # the issue's HALF_OPEN reset
    ("(target_info)", "(up)", "QmOtelServiceAbsent"),
    ("blocked_total[5m])) > 1\n", "blocked_total[5m])) > 3\n", "QmOtelEventLoopBlocked"),
    (_BLOCKED_FOR.format("10m"), _BLOCKED_FOR.format("3m"), "QmOtelEventLoopBlocked"),  # the burst would fire
])
@pytest.mark.integration
def test_promtool_tests_fail_when_a_rule_drifts_from_its_test(tmp_path: Path, before: str, after: str,
                                                               alert: str) -> None:
    files = render_all()
    (tmp_path / "dashboards/alerts").mkdir(parents=True)
    assert before in files[RULES]
    (tmp_path / RULES).write_text(files[RULES].replace(before, after))
    tests_file = yaml.safe_load(files[RULE_TESTS])  # only this alert's tests: promtool takes seconds for each
    tests_file["tests"] = [test for test in tests_file["tests"] if test["alert_rule_test"][0]["alertname"] == alert]
    (tmp_path / RULE_TESTS).write_text(yaml.safe_dump(tests_file))
    tests = subprocess.run([str(PROMTOOL), "test", "rules", RULE_TESTS], cwd=tmp_path, capture_output=True,
                           text=True, check=False)
    assert tests.returncode != 0
    assert alert in tests.stdout + tests.stderr


# --- Loki ------------------------------------------------------------------------------------------------


def test_the_loki_rules_file_is_a_rule_group_file_outside_prometheus_rule_glob() -> None:
    data = yaml.safe_load((ROOT / LOKI_RULES).read_text())
    assert list(data) == ["groups"]
    [group] = data["groups"]
    assert set(group) == {"name", "rules"}
    assert [rule["alert"] for rule in group["rules"]] == [rule.alert for rule in loki_rules(conventions())]
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
    # Prometheus loads dashboards/alerts/*.rules.yml (docker-compose.yml); LogQL must not be among them
    assert Path(LOKI_RULES).parent != Path(RULES).parent


def logql_problems(expr: str) -> list[str]:
    """A sanity check of a LogQL metric query: what is wrong with it, or nothing."""
    problems = []
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    if unquoted.count('"') % 2:
        problems.append("an unterminated string")
    for opening, closing in ("()", "{}", "[]"):
        depth = 0
        for char in unquoted:
            depth += (char == opening) - (char == closing)
            if depth < 0:
                break
        if depth:
            problems.append(f"unbalanced {opening}{closing}")
    selector = re.search(r"\{([^}]*)\}", unquoted)
    if not selector or not re.search(r'\w+\s*(=|=~)\s*""', selector.group(1)):
        problems.append("no stream selector with a matcher")
    if not re.search(r"\[\d+[smhd]\]", unquoted):
        problems.append("no range")
    if not re.match(r"sum by \(service_name\) \((count_over_time|rate)\(", expr):
        problems.append("not a per-service count")
    return problems


@pytest.mark.parametrize("rule", rule_file(LOKI_RULES), ids=lambda rule: rule["alert"])
def test_every_loki_expression_passes_the_logql_sanity_check(rule: dict[str, Any]) -> None:
    assert logql_problems(rule["expr"]) == []


def test_the_sanity_check_catches_broken_logql() -> None:
    assert logql_problems('sum by (service_name) (count_over_time({service_name=~".+"} [5m])') == ["unbalanced ()"]
    assert "no range" in logql_problems('sum by (service_name) (count_over_time({service_name=~".+"}))')
    assert "no stream selector with a matcher" in logql_problems("sum by (service_name) (count_over_time({} [5m]))")


_PARSE = """
const { parser } = require("@grafana/lezer-logql");
const exprs = JSON.parse(require("fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(exprs.map((expr) => {
  const errors = [];
  parser.parse(expr).iterate({ enter: (node) => { if (node.type.isError) errors.push(node.from); } });
  return errors;
})));
"""


@pytest.fixture(scope="module")
def logql_grammar() -> Path:
    return grammar_dir()


def logql_errors(grammar: Path, exprs: list[str]) -> list[list[int]]:
    parsed = subprocess.run(["node", "-e", _PARSE], cwd=grammar, input=json.dumps(exprs), capture_output=True,
                            text=True, check=True, timeout=60)
    return list(json.loads(parsed.stdout))


@pytest.mark.integration
def test_grafanas_logql_grammar_parses_every_loki_rule_and_rejects_broken_ones(logql_grammar: Path) -> None:
    exprs = [rule["expr"] for rule in rule_file(LOKI_RULES)]
    broken = ['sum by (service_name (count_over_time({service_name=~".+"} [5m]))',
              'rate({service_name=~".+"} |= [5m])']
    errors = logql_errors(logql_grammar, exprs + broken)
    assert errors[: len(exprs)] == [[] for _ in exprs], dict(zip(exprs, errors, strict=False))
    assert all(errors[len(exprs):]), "the grammar check accepts broken LogQL: it proves nothing"


def test_docs_dashboards_md_describes_every_alert_with_its_for() -> None:
    alerts_section = (ROOT / "docs/dashboards.md").read_text(encoding="utf-8").partition("\n## Alerts\n")[2]
    for rule in all_rules():
        row = next((line for line in alerts_section.splitlines() if line.startswith(f"| `{rule['alert']}` |")), None)
        assert row is not None, f"docs/dashboards.md's Alerts table has no row for {rule['alert']}"
        assert f"| {rule['for']} | {rule['labels']['severity']} |" in row


@pytest.mark.parametrize(("text", "message"), [
    ("[alert_policy]\nslo_availability_percent = 100\n", "alert_policy.slo_availability_percent has the number 100"),
    ("[alert_policy]\nbreaker_flap_openings = 2.5\n", "alert_policy.breaker_flap_openings has the number 2.5"),
    ("[alert_policy]\nslo_period = 30\n",
     "unknown key alert_policy.slo_period; did you mean alert_policy.slo_period_days?"),
    ("[alert_policy]\nrunbook_base_url = 3\n", "alert_policy.runbook_base_url has the number 3; expected a string"),
    ("[alert_policy]\nevent_loop_stalls_per_minute_above = 0\n",
     "alert_policy.event_loop_stalls_per_minute_above has the number 0; expected a positive number"),
    ("[alert_policy]\nevent_loop_stalls_per_minute_above = \"1\"\n",
     'alert_policy.event_loop_stalls_per_minute_above has the string "1"; expected a number'),
])
def test_a_bad_alert_policy_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    override = tmp_path / "bad.toml"
    override.write_text(text)
    with pytest.raises(ConventionsError, match=re.escape(message)):
        load_with_overrides(str(override))


# --- QmOtelEventLoopBlocked's runbook: the queries that find the blocking code ------------------------

#: the watchdog's record (issue 25): its logger, and the attributes the runbook's queries filter or group on,
#: as OTLP names them; Loki's OTLP ingestion keeps them as structured metadata with the dots turned to
#: underscores (pkg/loghttp/push/otlp.go: otlptranslator.NormalizeLabel) and the logger, the OTLP
#: instrumentation scope, as scope_name
WATCHDOG_LOGGER = "qm_otel.event_loop"
WATCHDOG_ATTRIBUTES = ("code.file.path", "code.line.number", "code.function.name", "http.route",
                       "event_loop.blocked_ms")


def runbook_blocks(anchor: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", runbook_sections()[anchor], flags=re.DOTALL)


@pytest.mark.integration
def test_the_event_loop_runbook_queries_name_the_watchdogs_record_as_loki_stores_it(logql_grammar: Path) -> None:
    queries = runbook_blocks("qmoteleventloopblocked", "logql")
    assert len(queries) == 3
    assert all(f'| scope_name="{WATCHDOG_LOGGER}"' in query for query in queries)
    assert all(query.startswith(('{service_name="', "sum by (")) for query in queries)
    used = set(re.findall(r"\b(code_\w+|http_route|event_loop_\w+)\b", " ".join(queries)))
    assert used == {name.replace(".", "_") for name in WATCHDOG_ATTRIBUTES}
    assert logql_errors(logql_grammar, queries) == [[] for _ in queries], queries
    # the span event on the blocked request's server span, in TraceQL's event scope (Tempo 3.0.3:
    # pkg/traceql/expr.y, EVENT_COLON NAME; docs/sources/tempo/traceql/construct-traceql-queries.md)
    assert runbook_blocks("qmoteleventloopblocked", "traceql") == ['{ event:name = "qm_otel.event_loop.blocked" }']
