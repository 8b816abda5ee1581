"""Issue 23, items 2 and 3: Alertmanager groups and inhibits by labels the alerts carry; images at patched tags.

collector/alertmanager.yml is written by hand (its receivers are the user's to fill in), while the
alert names come from the generated rule files. So the config is checked against those files:
every label it groups or inhibits on is one the alerts carry, every alert name its inhibit rules
match is one a rule defines. What the inhibit rules do to real alerts, in a real Alertmanager:
tests/integration/test_alertmanager_inhibition.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qm_otel.cli.render import LOKI_RULES, RULES

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER = ROOT / "collector" / "alertmanager.yml"
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.filelog.yml")
#: the one alert that is about the collector, not a service: it aggregates by exporter only
NOT_PER_SERVICE = {"QmOtelCollectorExportFailing"}
_BY = re.compile(r"\bby \(([^)]*)\)")
_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$')
_NAME = re.compile(r"^QmOtel\w+$")

#: the lowest tag each image may be at: the releases that carry the fixes issue 23 asked for
#: (Tempo v3.0.3: Go and gRPC CVE fixes; Prometheus v3.13.2: golang.org/x/text CVE, gRPC;
#: collector-contrib 0.159.0: the newest release whose notes could be read here, and the one the
#: pipeline dashboard's otelcol_processor_memory_limiter_* names were checked against)
IMAGE_FLOORS = {
    "grafana/tempo": (3, 0, 3),
    "prom/prometheus": (3, 13, 2),
    "otel/opentelemetry-collector-contrib": (0, 159, 0),
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> dict[str, set[str]]:
    """Alert name → the labels every ``by (...)`` of its expression keeps, over both rule files."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / RULES, ROOT / LOKI_RULES):
        for group in load(path)["groups"]:
            for rule in group["rules"]:
                clauses = [{label.strip() for label in by.split(",")} for by in _BY.findall(rule["expr"])]
                assert clauses, f"{rule['alert']}: no `by (...)` in {rule['expr']}"
                found[rule["alert"]] = set.intersection(*clauses)
    return found


def matchers(items: list[str]) -> list[tuple[str, str, str]]:
    """``['alertname="X"', 'service_name!=""']`` → ``[("alertname", "=", "X"), ("service_name", "!=", "")]``."""
    parsed = []
    for item in items:
        match = _MATCHER.match(item)
        assert match, f"not a plain label matcher: {item!r}"
        parsed.append((match[1], match[2], match[3]))
    return parsed


def alert_names(items: list[str]) -> tuple[set[str], bool]:
    """The alert names the ``alertname`` matchers spell out (= or a =~ alternation), and whether negated."""
    names: set[str] = set()
    negated = False
    for label, op, value in matchers(items):
        if label == "alertname":
            names.update(value.split("|") if op in ("=~", "!~") else [value])
            negated = negated or op in ("!=", "!~")
    return names, negated


def inhibit_problems(inhibit_rules: list[dict[str, Any]], defined: dict[str, set[str]]) -> list[str]:
    """What is wrong with ``inhibit_rules`` given the alerts ``defined`` (name → labels it carries)."""
    problems = []
    for rule in inhibit_rules:
        sources, source_negated = alert_names(rule["source_matchers"])
        targets, negated = alert_names(rule["target_matchers"])
        if len(sources) != 1 or source_negated:
            problems.append(f"{rule}: not exactly one source alert")
        problems += [f"{rule}: {name!r} is not a plain alert name"
                     for name in sources | targets if not _NAME.match(name)]
        unknown = (sources | targets) - set(defined)
        if unknown:
            problems.append(f"{rule}: names alerts no rule defines: {sorted(unknown)}")
        # Alertmanager counts a label missing on both sides as equal: a source must carry each one.
        if ("service_name", "!=", "") not in matchers(rule["source_matchers"]) or "service_name" not in rule["equal"]:
            problems.append(f"{rule}: the source must have service_name != \"\" and equal must name it")
        matched = (set(defined) - targets - NOT_PER_SERVICE) if negated else targets
        problems += [f"{rule}: {name} does not carry {label!r}"
                     for label in rule["equal"] for name in sorted((sources | matched) & set(defined))
                     if label not in defined[name]]
    return problems


def config() -> dict[str, Any]:
    return load(ALERTMANAGER)  # type: ignore[no-any-return]


def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("amtool is not installed (scripts/install installs prometheus-alertmanager)")
        pytest.skip("amtool (Debian prometheus-alertmanager) not installed")
    return path


def test_every_alert_but_the_collectors_carries_service_name() -> None:
    found = rules()
    assert len(found) >= 16
    assert {name for name, labels in found.items() if "service_name" not in labels} == NOT_PER_SERVICE


def test_alerts_are_grouped_by_labels_the_alerts_carry() -> None:
    group_by = config()["route"]["group_by"]
    assert group_by == ["alertname", "service_name"]
    per_service = [labels for name, labels in rules().items() if name not in NOT_PER_SERVICE]
    for label in set(group_by) - {"alertname"}:
        assert all(label in labels for labels in per_service), f"group_by {label}: an alert does not carry it"
    assert "routes" not in config()["route"], "a sub-route would need the same checks"


def test_inhibit_rules_name_only_alerts_the_rules_define() -> None:
    inhibit_rules = config()["inhibit_rules"]
    assert inhibit_rules
    assert all(set(rule) == {"source_matchers", "target_matchers", "equal"} for rule in inhibit_rules)
    assert inhibit_problems(inhibit_rules, rules()) == []


def test_the_inhibit_check_catches_a_renamed_alert_and_a_missing_guard() -> None:
    renamed = [{"source_matchers": ['alertname="QmOtelHighErrorRate"'],
                "target_matchers": ['alertname=~"QmOtelHighErrorRatio|QmOtelSlowResponses"'],
                "equal": ["service_name"]},
               {"source_matchers": ['alertname="QmOtelCircuitBreakerOpen"', 'service_name!=""'],
                "target_matchers": ['alertname="QmOtelHighErrorRate"'],
                "equal": ["service_name", "breaker"]}]
    problems = inhibit_problems(renamed, rules())
    assert len(problems) == 3, problems
    assert "no rule defines: ['QmOtelHighErrorRatio']" in problems[0]
    assert "service_name != \"\"" in problems[1]
    assert "QmOtelHighErrorRate does not carry 'breaker'" in problems[2]


@pytest.mark.integration
def test_amtool_routes_every_service_to_the_default_receiver() -> None:
    tool = amtool()
    check = subprocess.run([tool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(config()['inhibit_rules'])} inhibit rules" in check.stdout
    for labels in (["service_name=a", "alertname=QmOtelHighErrorRate"], ["service_name=b", "alertname=X"],
                   ["alertname=QmOtelCollectorExportFailing", "exporter=otlp_http/loki"]):
        result = subprocess.run(
            [tool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", "--verify.receivers=default", *labels],
            capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "default"


def _version(tag: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", tag)
    assert match, f"not a release tag: {tag}"
    return tuple(int(part) for part in match.groups())


def test_images_are_at_least_at_the_patched_tags() -> None:
    pinned: dict[str, list[str]] = {}
    for path in COMPOSE_FILES:
        for service in (load(path).get("services") or {}).values():
            if "image" in service:
                name, _, tag = service["image"].rpartition(":")
                pinned.setdefault(name, []).append(tag)
    for name, floor in IMAGE_FLOORS.items():
        assert name in pinned, f"{name} is not in the compose files"
        for tag in pinned[name]:
            assert _version(tag) >= floor, f"{name}:{tag} is below {'.'.join(map(str, floor))}"


@pytest.mark.parametrize(("tag", "ok"), [("3.0.2", False), ("3.0.3", True), ("3.1.0", True), ("2.10.8", False)])
def test_the_floor_comparison(tag: str, ok: bool) -> None:
    assert (_version(tag) >= IMAGE_FLOORS["grafana/tempo"]) is ok
