"""The Kubernetes files ``qm-otel render`` writes: collector Helm values, dashboard ConfigMaps, PrometheusRule.

No cluster, no Helm and no collector binary here. What the pinned releases accept is recorded below from
their sources, as tests/unit/test_collector_filelog.py does for the compose stack; every key the values set
must be in these tables. Where each table was read (say so when a table was not read at the pinned tag):

- collector core (memory_limiter, otlp_grpc / otlp_http exporters, queue, retry, TLS):
  open-telemetry/opentelemetry-collector at tag v0.159.0 (commit 69c0873044e80fe1f0647a0bc5afec6244bcad76),
  read from a full clone: the pinned release.
- collector-contrib (tail_sampling, load_balancing, k8s_attributes): NOT read at v0.159.0. The repository is too
  large to clone here and the search index holds older stored versions of each config.go, read for the keys:
  open-telemetry/opentelemetry-collector-contrib
  processor/tailsamplingprocessor/config.go @ 497862f69939b03daed1915653227b6defa85c0f,
  exporter/loadbalancingexporter/config.go @ 870de3632d376a989b61459319e6e8754ec1532c,
  processor/k8sattributesprocessor/config.go @ b0f975e0c037047ca9bbffd13264a55ececf9b03 (all before 2025).
  Newer keys and the component renames come from a secondary source that states it traced them to the contrib
  source at v0.154.0 (load_balancing) and v0.156.0 (tail_sampling): ollygarden/opentelemetry-agent-skills
  skills/otel-collector/components/load_balancing/configuration.md @ 604a19772c119c7ee05d508855f1b5af65f078f4 and
  tail_sampling/{configuration,policies}.md @ f332abb4fa92336414d2d4950244c1ac2954415c; the rename
  `loadbalancing` -> `load_balancing` is contrib PR #48533 (merged 2026-05-19, in v0.153.0, the old name kept as
  a deprecated alias). The keys used here are in every one of these.
  Between those and the pinned tag, the release notes, as for the compose stack's contrib components
  (tests/unit/test_collector_filelog.py): the Splunk distribution's CHANGELOG.md (signalfx/splunk-otel-collector
  @ 331f8e15ae2b599a983af0ef7775f81d5c40977c) reproduces contrib's entries for v0.154.0-v0.158.0, and for
  these three components they remove no key and rename none: tail_sampling adds a feature gate
  (usetracestate), an and_sub_policy nesting and a metric, and since v0.156.0 treats `threshold_ms` as an
  exclusive lower bound when `upper_threshold_ms` is unset (#49593: "slower than" the threshold, as the
  conventions' slow request is); load_balancing fixes leaks and adds logs routing keys; k8s_attributes adds
  `pod_delete_grace_period` and drops a feature gate. The v0.159.0 distribution manifest
  (open-telemetry/opentelemetry-collector-releases tag v0.159.0, commit f817832365a9a2b829bc7c25feffcf8834585dea,
  distributions/otelcol-contrib/manifest.yaml) builds all three at v0.159.0, and that release's notes
  break only kafkatopicsobserver. What stays unread: contrib's own v0.159.0 entries, and each config.go at the
  tag (the repository is 1.37 GB, over the fetch limit; no registry here carries a collector binary to run
  `otelcol-contrib validate`).
- the chart (presets, schema, defaults): open-telemetry/opentelemetry-helm-charts tag
  opentelemetry-collector-0.170.0 (tests/schemas/helm/README.md).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from qm_otel.cli.render import RULES, render_all
from qm_otel.cli.render.dashboards import dashboard_files
from qm_otel.cli.render.kubernetes import (
    AGENT,
    AGENT_LOGS_VALUES,
    AGENT_VALUES,
    BACKENDS,
    CHART_VERSION,
    COLLECTOR_IMAGE,
    DASHBOARD_CONFIGMAPS,
    GATEWAY,
    GATEWAY_VALUES,
    NAMESPACE,
    PROMETHEUS_RULES,
    QM_OTEL_LINE,
    gateway_values,
    kubernetes_files,
    tail_sampling_policies,
)
from qm_otel.core.conventions import ConventionsError, load_with_overrides
from qm_otel.logs.formatters import JsonFormatter
from tests.unit.test_collector_filelog import COLLECTOR_IMAGE as COMPOSE_COLLECTOR_IMAGE
from tests.unit.test_collector_filelog import FIELD, LAYOUT_TYPES, ON_ERROR, OPERATORS, RECEIVER, SEVERITY_NAMES
from tests.unit.test_collector_filelog import RETRY as FILELOG_RETRY
from tests.unit.test_collector_filelog import receiver as compose_filelog

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "tests" / "schemas" / "helm"
CHART_SCHEMA = HELM / f"opentelemetry-collector-{CHART_VERSION}.values.schema.json"
CHART_DEFAULTS = HELM / f"opentelemetry-collector-{CHART_VERSION}.values.yaml"

# --- collector core v0.159.0 ------------------------------------------------------------------------------
#: internal/memorylimiter/config.go Config
MEMORY_LIMITER = frozenset({"check_interval", "min_gc_interval_when_soft_limited", "min_gc_interval_when_hard_limited",
                            "max_gc_interval_when_soft_limited", "max_gc_interval_when_hard_limited", "limit_mib",
                            "spike_limit_mib", "limit_percentage", "spike_limit_percentage"})
#: exporter/exporterhelper/internal/queuebatch/config.go Config (+ configoptional's `enabled`) and BatchConfig
QUEUE = frozenset({"enabled", "wait_for_result", "sizer", "queue_size", "block_on_overflow", "storage",
                   "num_consumers", "batch"})
BATCH = frozenset({"flush_timeout", "sizer", "min_size", "max_size", "partition"})
#: config/configretry/generated_config.go BackOffConfig
RETRY = frozenset({"enabled", "initial_interval", "max_elapsed_time", "max_interval", "multiplier",
                   "randomization_factor"})
#: config/configtls/generated_config.go ClientConfig (the keys used here)
TLS = frozenset({"insecure", "insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name_override"})
#: config/configgrpc/configgrpc.go ClientConfig, squashed into exporter/otlpexporter/config.go with
#: TimeoutConfig (timeout), sending_queue, retry_on_failure; metadata.yaml type otlp_grpc (deprecated: otlp)
OTLP_GRPC = frozenset({"endpoint", "compression", "tls", "keepalive", "read_buffer_size", "write_buffer_size",
                       "wait_for_ready", "headers", "user_agent", "balancer_name", "authority", "auth",
                       "middlewares", "timeout", "sending_queue", "retry_on_failure"})
#: exporter/otlphttpexporter/config.go: confighttp ClientConfig (endpoint, tls, headers, timeout, ...) squashed,
#: sending_queue, retry_on_failure, *_endpoint, encoding; metadata.yaml type otlp_http (deprecated: otlphttp)
OTLP_HTTP = frozenset({"endpoint", "tls", "headers", "timeout", "compression", "sending_queue", "retry_on_failure",
                       "traces_endpoint", "metrics_endpoint", "logs_endpoint", "profiles_endpoint", "encoding"})

# --- collector-contrib, stored versions (see the module docstring) -------------------------------------------
#: processor/tailsamplingprocessor/config.go Config (+ the v0.156.0 keys of the secondary source), PolicyCfg
#: (sharedPolicyCfg squashed: name, type, one block per policy type) and the three policy configs used
TAIL_SAMPLING = frozenset({"decision_wait", "num_traces", "expected_new_traces_per_sec", "policies",
                           "sampling_strategy", "decision_wait_after_root_received", "sample_on_first_match",
                           "block_on_overflow", "drop_pending_traces_on_shutdown", "maximum_trace_size_bytes",
                           "decision_cache"})
POLICY = frozenset({"name", "type", "always_sample", "latency", "numeric_attribute", "probabilistic", "status_code",
                    "string_attribute", "rate_limiting", "bytes_limiting", "span_count", "trace_state", "trace_flags",
                    "boolean_attribute", "ottl_condition", "composite", "and", "not", "drop"})
POLICY_CONFIGS = {
    "status_code": frozenset({"status_codes"}),
    "latency": frozenset({"threshold_ms", "upper_threshold_ms"}),
    "probabilistic": frozenset({"hash_salt", "sampling_percentage"}),
}
#: internal/sampling/status_code.go: the accepted status codes
STATUS_CODES = frozenset({"OK", "ERROR", "UNSET"})
#: exporter/loadbalancingexporter/config.go Config, ResolverSettings, DNSResolver (+ the v0.154.0 keys of the
#: secondary source); protocol.otlp is the OTLP exporter's Config, its endpoint set per resolved backend
LOADBALANCING = frozenset({"protocol", "resolver", "routing_key", "routing_attributes", "timeout",
                           "retry_on_failure", "sending_queue"})
RESOLVERS = frozenset({"static", "dns", "k8s", "aws_cloud_map"})
DNS_RESOLVER = frozenset({"hostname", "port", "interval", "timeout"})
#: the routing keys a traces pipeline accepts (v0.154.0: traceID (default), service, attributes)
TRACE_ROUTING_KEYS = frozenset({"traceID", "service", "attributes"})

#: the components each values file may use, and the table that checks each
PROCESSORS = {"memory_limiter", "k8s_attributes", "attributes/scrub", "resource/loki", "tail_sampling"}
EXPORTERS = {"load_balancing", "otlp_grpc", "otlp_http"}


@functools.cache
def files() -> dict[str, str]:
    """The packaged conventions' Kubernetes files, rendered once for the module."""
    return kubernetes_files()


def rendered(path: str) -> list[Any]:
    return list(yaml.safe_load_all(files()[path]))


def values(path: str) -> dict[str, Any]:
    (document,) = rendered(path)
    return document  # type: ignore[no-any-return]


def coalesce(defaults: Any, override: Any) -> Any:
    """Helm's merge of a values file onto the chart's values: maps merge, null deletes, the rest replaces."""
    if isinstance(defaults, dict) and isinstance(override, dict):
        result = dict(defaults)
        for key, value in override.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = coalesce(defaults.get(key), value)
        return result
    return copy.deepcopy(override)


def effective(path: str) -> dict[str, Any]:
    return coalesce(yaml.safe_load(CHART_DEFAULTS.read_text(encoding="utf-8")), values(path))  # type: ignore[no-any-return]


def test_the_committed_files_are_what_render_writes() -> None:
    for path, content in files().items():
        assert (ROOT / path).read_text(encoding="utf-8") == content, f"{path}: run `qm-otel render` and commit it"
    assert set(files()) <= set(render_all()), "registered in render's list (so `render --check` covers them)"


def test_the_collector_is_the_compose_release() -> None:
    assert f"{COLLECTOR_IMAGE['repository']}:{COLLECTOR_IMAGE['tag']}" == COMPOSE_COLLECTOR_IMAGE
    for path in (AGENT_VALUES, GATEWAY_VALUES):
        assert values(path)["image"] == COLLECTOR_IMAGE


# --- the tail-sampling policy ---------------------------------------------------------------------------------

def policies(path: str = GATEWAY_VALUES) -> list[dict[str, Any]]:
    return values(path)["config"]["processors"]["tail_sampling"]["policies"]  # type: ignore[no-any-return]


def test_the_three_policies_are_or_ed() -> None:
    rendered_policies = policies()
    assert [p["type"] for p in rendered_policies] == ["status_code", "latency", "probabilistic"]
    # top-level policies are OR-ed by the processor: any one sampling the trace keeps it. Nothing here may
    # turn that into AND or a veto: no `and`/`composite` wrapper, no inverted match, no drop policy.
    assert all(p["type"] not in ("and", "composite", "drop") for p in rendered_policies)
    assert not any("invert_match" in json.dumps(p) for p in rendered_policies)
    assert rendered_policies[0]["status_code"] == {"status_codes": ["ERROR"]}
    assert rendered_policies[1]["latency"] == {"threshold_ms": 2000}
    assert rendered_policies[2]["probabilistic"] == {"sampling_percentage": 10.0}


def test_the_latency_threshold_follows_the_conventions(tmp_path: Path) -> None:
    override = tmp_path / "ours.toml"
    override.write_text("[requests]\nslow_ms = 750\n")
    changed = load_with_overrides(str(override))
    assert tail_sampling_policies(changed)[1]["latency"] == {"threshold_ms": 750}
    changed_files = kubernetes_files(changed)
    assert changed_files[GATEWAY_VALUES] != files()[GATEWAY_VALUES]
    assert changed_files[AGENT_VALUES] == files()[AGENT_VALUES]
    gateway = yaml.safe_load(changed_files[GATEWAY_VALUES])
    assert gateway["config"]["processors"]["tail_sampling"]["policies"][1]["latency"]["threshold_ms"] == 750
    assert gateway == yaml.safe_load(yaml.safe_dump(gateway_values(changed)))


def test_every_request_logged_as_slow_keeps_its_trace(tmp_path: Path) -> None:
    """The request log: duration_ms > slow_ms. The latency policy: int(trace duration in ms) >= threshold_ms."""
    for slow_ms in (2000, 1500.5):
        override = tmp_path / f"slow-{slow_ms}.toml"  # load_with_overrides caches by path
        override.write_text(f"[requests]\nslow_ms = {slow_ms}\n")
        threshold = tail_sampling_policies(load_with_overrides(str(override)))[1]["latency"]["threshold_ms"]
        for duration_ms in (slow_ms + 0.001, slow_ms + 0.999, slow_ms + 1, slow_ms * 3):
            assert int(duration_ms) >= threshold, (slow_ms, duration_ms)
        assert int(slow_ms - 1) < threshold


def test_the_share_is_a_convention(tmp_path: Path) -> None:
    assert load_with_overrides(None).tail_keep_percent == 10
    override = tmp_path / "share.toml"
    override.write_text("[tail_sampling]\nkeep_percent = 2.5\n")
    changed = load_with_overrides(str(override))
    assert tail_sampling_policies(changed)[2]["probabilistic"] == {"sampling_percentage": 2.5}
    assert tail_sampling_policies(changed)[:2] == tail_sampling_policies(load_with_overrides(None))[:2]
    assert tail_sampling_policies(changed, keep_percent=25)[2]["probabilistic"]["sampling_percentage"] == 25
    with pytest.raises(ValueError, match="keep_percent is 150; expected a percentage from 0 to 100"):
        tail_sampling_policies(changed, 150)


@pytest.mark.parametrize(("value", "shown"), [("150", "the number 150"), ("-1", "the number -1"),
                                               ('"ten"', 'the string "ten"')])
def test_a_bad_share_names_the_key_the_value_and_what_is_allowed(tmp_path: Path, value: str, shown: str) -> None:
    override = tmp_path / "bad-share.toml"  # each case its own tmp_path: load_with_overrides caches by path
    override.write_text(f"[tail_sampling]\nkeep_percent = {value}\n")
    expected = "a number from 0 to 100" if "number" in shown else "a number"
    with pytest.raises(ConventionsError, match=f"key tail_sampling.keep_percent has {shown}; expected {expected}"):
        load_with_overrides(str(override))


def test_the_decision_wait_outlasts_the_slow_request_threshold() -> None:
    wait = values(GATEWAY_VALUES)["config"]["processors"]["tail_sampling"]["decision_wait"]
    assert wait.endswith("s")
    assert int(wait[:-1]) * 1000 >= 2 * load_with_overrides(None).slow_request_ms


# --- topology ---------------------------------------------------------------------------------------------------

def test_the_agent_routes_traces_by_trace_id_to_the_gateways_headless_service() -> None:
    agent, gateway = effective(AGENT_VALUES), effective(GATEWAY_VALUES)
    assert (agent["mode"], agent["fullnameOverride"], agent["namespaceOverride"]) == ("daemonset", AGENT, NAMESPACE)
    assert (gateway["mode"], gateway["fullnameOverride"], gateway["namespaceOverride"]) == (
        "deployment", GATEWAY, NAMESPACE)
    lb = agent["config"]["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    assert lb["resolver"] == {"dns": {"hostname": f"{GATEWAY}.{NAMESPACE}.svc.cluster.local", "port": "4317"}}
    assert gateway["service"]["clusterIP"] == "None"  # headless: DNS answers with every replica
    assert agent["config"]["service"]["pipelines"]["traces"]["exporters"] == ["load_balancing"]
    assert gateway["config"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")


def test_otlp_in_on_every_node_and_the_presets() -> None:
    agent = effective(AGENT_VALUES)
    assert agent["ports"]["otlp"]["hostPort"] == 4317
    assert agent["ports"]["otlp"]["enabled"]
    assert agent["ports"]["otlp-http"]["hostPort"] == 4318
    assert agent["ports"]["otlp-http"]["enabled"]
    assert agent["service"] == {"type": "ClusterIP", "annotations": {}, "enabled": True,
                                "internalTrafficPolicy": "Local"}
    assert agent["presets"]["kubernetesAttributes"]["enabled"] is True
    # _config.tpl at the chart tag: the preset's processor is `k8s_attributes` only with the rewrite on
    assert values(AGENT_VALUES)["rewriteDeprecatedComponentNames"] is True
    assert agent["presets"]["logsCollection"]["enabled"] is False


def test_pipelines_use_only_defined_components_memory_limiter_first() -> None:
    for path in (AGENT_VALUES, GATEWAY_VALUES):
        config = effective(path)["config"]
        pipelines = config["service"]["pipelines"]
        for name, pipeline in pipelines.items():
            assert pipeline["processors"][0] == "memory_limiter", f"{path} {name}"
            for kind in ("receivers", "exporters"):
                for component in pipeline[kind]:
                    assert component in config[kind], f"{path} {name}: {component} undefined"
            for component in pipeline["processors"]:
                # k8s_attributes is defined by the chart's kubernetesAttributes preset (_config.tpl)
                assert component in config["processors"] or component == "k8s_attributes", f"{path}: {component}"
        # the chart's defaults that qm-otel does not run are gone
        assert set(config["receivers"]) == {"otlp"}
        assert "batch" not in config["processors"]
        assert "debug" not in config["exporters"]
    assert set(effective(GATEWAY_VALUES)["config"]["service"]["pipelines"]) == {"traces"}


def test_backends_come_from_the_one_table() -> None:
    agent = values(AGENT_VALUES)["config"]["exporters"]
    gateway = values(GATEWAY_VALUES)["config"]["exporters"]
    assert agent["otlp_http/prometheus"]["endpoint"] == BACKENDS["prometheus"]
    assert agent["otlp_http/loki"]["endpoint"] == BACKENDS["loki"]
    assert gateway["otlp_grpc/tempo"]["endpoint"] == BACKENDS["tempo"]
    assert all(f".{NAMESPACE}" in endpoint for endpoint in BACKENDS.values())


def test_the_instrumentation_sends_to_the_agents_local_service() -> None:
    """deploy/kubernetes/instrumentation.yaml (written separately) points the apps at this Service."""
    text = (ROOT / "deploy/kubernetes/instrumentation.yaml").read_text(encoding="utf-8")
    assert f"endpoint: http://{AGENT}.{NAMESPACE}.svc.cluster.local:4318" in text


@pytest.mark.parametrize(("backend", "values_file"), [
    ("tempo", "tempo-values.yaml"), ("loki", "loki-values.yaml"), ("prometheus", "kube-prometheus-stack-values.yaml")])
def test_the_backends_values_name_the_same_endpoints(backend: str, values_file: str) -> None:
    """deploy/kubernetes/backends/ (written separately) documents the Service each collector exporter targets."""
    text = (ROOT / "deploy/kubernetes/backends" / values_file).read_text(encoding="utf-8")
    assert BACKENDS[backend].removeprefix("http://") in text


def test_scrubbing_is_the_compose_collectors() -> None:
    compose = yaml.safe_load((ROOT / "collector/otel-collector.yaml").read_text(encoding="utf-8"))["processors"]
    agent = values(AGENT_VALUES)["config"]["processors"]
    assert agent["attributes/scrub"] == compose["attributes/scrub"]
    assert agent["resource/loki"] == compose["resource/loki"]


#: what the logsCollection preset writes when it is switched on (templates/_config.tpl
#: "opentelemetry-collector.logsCollectionConfig" at the chart tag, storeCheckpoints on as the values set it)
PRESET_FILELOG = {
    "include": ["/var/log/pods/*/*/*.log"],
    "exclude": ["/var/log/pods/observability_qm-otel-agent*_*/opentelemetry-collector/*.log"],
    "start_at": "end",
    "retry_on_failure": {"enabled": True},
    "storage": "file_storage",
    "include_file_path": True,
    "include_file_name": False,
    "operators": [{"type": "container", "id": "container-parser", "max_log_size": 102400}],
}


def test_the_logs_collection_preset_would_write_keys_the_pinned_filelog_has() -> None:
    """Off by default; switched on, the chart's filelog receiver must hold at the pinned collector too."""
    assert set(PRESET_FILELOG) <= RECEIVER  # tests/unit/test_collector_filelog.py's table (stanza sources)
    for operator in PRESET_FILELOG["operators"]:
        keys, where = OPERATORS[operator["type"]]
        assert set(operator) <= keys, where
    assert values(AGENT_VALUES)["presets"]["logsCollection"] == {"enabled": False, "storeCheckpoints": True}


# --- pod logs through filelog: the opt-in overlay -----------------------------------------------------------------

def agent_with_logs() -> dict[str, Any]:
    """helm -f agent-values.yaml -f agent-logs-values.yaml: both files onto the chart's values."""
    return coalesce(effective(AGENT_VALUES), values(AGENT_LOGS_VALUES))  # type: ignore[no-any-return]


def pod_log_receiver() -> dict[str, Any]:
    """The filelog receiver the chart writes with the overlay: the preset's, the overlay's config over it."""
    return coalesce(PRESET_FILELOG, agent_with_logs()["config"]["receivers"]["filelog"])  # type: ignore[no-any-return]


#: the compose chain's steps only Docker's json-file lines need, by (type, id or field): Docker's container
#: parser (the preset's detects CRI-O/containerd/docker), the opt-in filter and the moves out of the logging
#: driver's `attrs` (every pod's lines come here; service.name comes from the line), Docker's 16 KiB parts
DOCKER_ONLY = [("container", "docker"), ("filter", "opted_in"), ("recombine", "long_lines"),
               ("move", "attributes.attrs.OTEL_SERVICE_NAME"), ("move", "attributes.attrs.QM_OTEL_ENVIRONMENT"),
               ("remove", "attributes.attrs")]


def test_the_pod_log_chain_is_the_compose_filelog_chain_minus_the_docker_only_steps() -> None:
    compose = compose_filelog()["operators"]
    step = [(op["type"], op.get("id") or op.get("from") or op.get("field")) for op in compose]
    assert [s for s in step if s in DOCKER_ONLY] == DOCKER_ONLY
    expected = [op for op, s in zip(compose, step, strict=True) if s not in DOCKER_ONLY]
    # the one change: a line is parsed as JSON only when it starts as qm-otel's do
    (parser,) = (op for op in expected if op.get("id") == "qm_otel_line")
    expected[expected.index(parser)] = {**parser, "if": QM_OTEL_LINE}
    operators = pod_log_receiver()["operators"]
    assert operators[0] == PRESET_FILELOG["operators"][0]  # the preset's container parser, first as there
    assert operators[1:] == expected
    assert operators[-1] == compose[-1]  # the message becomes the body last


def qm_otel_line_pattern() -> re.Pattern[str]:
    """The RE2 pattern in QM_OTEL_LINE (an expr single-quoted string, no escapes), as a Python pattern."""
    match = re.fullmatch(r"body matches '([^']*)'", QM_OTEL_LINE)
    assert match is not None
    return re.compile(match.group(1))


def test_only_qm_otel_json_lines_are_parsed() -> None:
    formatter = JsonFormatter(service="orders")
    record = logging.LogRecord('app."quoted"', logging.WARNING, "app.py", 7, "hi %s", ("there",), None)
    record.order_id = 7
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("app", logging.ERROR, "app.py", 9, "failed", None, sys.exc_info())
    for line in (formatter.format(record), formatter.format(failed)):
        assert qm_otel_line_pattern().match(line), line
    for other in ('{"level":"info","ts":1733550000.1,"msg":"loki line"}', '{"timestamp":"x","msg":"y"}',
                  'level=info msg="logfmt"', "Traceback (most recent call last):", "{", ""):
        assert not qm_otel_line_pattern().match(other), other
    # every later step is conditional on what the parser writes; on_error keeps a broken line as a body
    operators = pod_log_receiver()["operators"]
    after = operators[[op.get("id") for op in operators].index("qm_otel_line") + 1:]
    assert all("if" in op for op in after)
    assert next(op for op in operators if op.get("id") == "qm_otel_line")["on_error"] == "send_quiet"


def test_the_merged_agent_has_a_logs_pipeline_from_filelog_to_loki() -> None:
    agent = agent_with_logs()
    assert agent["presets"]["logsCollection"] == {**effective(AGENT_VALUES)["presets"]["logsCollection"],
                                                  "enabled": True}
    assert agent["presets"]["logsCollection"]["storeCheckpoints"] is True  # offsets survive an agent restart
    pipelines = agent["config"]["service"]["pipelines"]
    logs = pipelines["logs"]
    assert logs["receivers"] == ["otlp", "filelog"]  # what the preset's append (uniq) leaves too
    assert logs["exporters"] == ["otlp_http/loki"]
    assert logs["processors"] == effective(AGENT_VALUES)["config"]["service"]["pipelines"]["logs"]["processors"]
    assert logs["processors"][0] == "memory_limiter"
    assert {"k8s_attributes", "attributes/scrub", "resource/loki"} <= set(logs["processors"])
    assert not [name for name, p in pipelines.items() if name != "logs" and "filelog" in p.get("receivers", [])]
    assert agent["config"]["exporters"]["otlp_http/loki"]["endpoint"] == BACKENDS["loki"]
    # only the preset, the filelog receiver and the logs pipeline's receivers: the rest is agent-values.yaml's
    overlay = values(AGENT_LOGS_VALUES)
    assert set(overlay) == {"presets", "config"}
    assert set(overlay["config"]) == {"receivers", "service"}
    assert set(overlay["config"]["receivers"]) == {"filelog"}
    chart_validator().validate(agent)


def test_the_pod_log_receiver_keys_are_in_the_recorded_tables() -> None:
    config = pod_log_receiver()
    assert set(config) <= RECEIVER
    assert set(config["retry_on_failure"]) <= FILELOG_RETRY
    assert config["retry_on_failure"] == compose_filelog()["retry_on_failure"]
    assert config["start_at"] == compose_filelog()["start_at"] == "beginning"
    assert config["storage"] == "file_storage"
    assert config["include_file_path"] is True  # the container parser reads k8s.* from log.file.path
    for operator in config["operators"]:
        kind = operator["type"]
        keys, where = OPERATORS[kind]
        assert set(operator) <= keys, f"{kind}: {set(operator) - keys} not in {where}"
        assert operator.get("on_error", "send") in ON_ERROR
        for key in ("parse_from", "parse_to", "from", "to", "field"):
            if key in operator:
                assert FIELD.fullmatch(operator[key]), f"{kind}.{key}: {operator[key]}"
        if kind == "severity_parser":
            assert set(operator["mapping"]) <= SEVERITY_NAMES
        if kind == "time_parser":
            assert operator["layout_type"] in LAYOUT_TYPES
    (container,) = (op for op in config["operators"] if op["type"] == "container")
    assert "format" not in container  # detected per line: CRI-O, containerd, docker
    assert "add_metadata_from_filepath" not in container  # default true: k8s.pod.name etc. from the path


def test_the_overlay_header_says_to_turn_otlp_log_export_off() -> None:
    text = files()[AGENT_LOGS_VALUES]
    header = text.split("\npresets:", 1)[0]
    assert "OTEL_LOGS_EXPORTER=none" in header
    assert "-f agent-values.yaml -f agent-logs-values.yaml" in header
    docs = (ROOT / "docs/kubernetes.md").read_text(encoding="utf-8")
    section = docs.split("### Pod logs through the collector", 1)[1].split("\n## ", 1)[0]
    assert "OTEL_LOGS_EXPORTER" in section
    assert "collector/agent-logs-values.yaml" in section


# --- the chart's schema -------------------------------------------------------------------------------------------

def chart_validator() -> jsonschema.Draft7Validator:
    """The chart's schema names no draft (``http://json-schema.org/schema#``); it uses nothing past draft 7."""
    schema = json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("path", [AGENT_VALUES, GATEWAY_VALUES])
def test_values_validate_against_the_chart_schema(path: str) -> None:
    # Helm validates the values coalesced onto the chart's own (the schema requires apiVersion, which only the
    # defaults set); every key of the file is in there, or it was a null that deletes a default
    chart_validator().validate(effective(path))


def test_a_wrong_key_fails_the_chart_schema() -> None:
    broken = {**effective(AGENT_VALUES), "presets": {"kubernetesAttribute": {"enabled": True}}}
    with pytest.raises(jsonschema.ValidationError, match="kubernetesAttribute"):
        chart_validator().validate(broken)


# --- every component and key against the recorded tables ------------------------------------------------------------

def check_exporter(name: str, config: dict[str, Any]) -> None:
    kind = name.split("/", maxsplit=1)[0]
    assert kind in EXPORTERS, f"{name}: no recorded table"
    if kind == "load_balancing":
        assert set(config) <= LOADBALANCING
        assert config["routing_key"] in TRACE_ROUTING_KEYS
        assert set(config["resolver"]) <= RESOLVERS
        assert set(config["resolver"]["dns"]) <= DNS_RESOLVER
        assert set(config["protocol"]) == {"otlp"}
        otlp = config["protocol"]["otlp"]
        assert "endpoint" not in otlp  # the resolver supplies it
        check_otlp(otlp, OTLP_GRPC)
    else:
        check_otlp(config, OTLP_GRPC if kind == "otlp_grpc" else OTLP_HTTP)


def check_otlp(config: dict[str, Any], keys: frozenset[str]) -> None:
    assert set(config) <= keys, set(config) - keys
    assert set(config.get("tls", {})) <= TLS
    queue = config.get("sending_queue", {})
    assert set(queue) <= QUEUE, set(queue) - QUEUE
    assert set(queue.get("batch", {})) <= BATCH
    assert set(config.get("retry_on_failure", {})) <= RETRY


def check_processor(name: str, config: dict[str, Any]) -> None:
    assert name in PROCESSORS, f"{name}: no recorded table"
    if name == "memory_limiter":
        assert set(config) <= MEMORY_LIMITER
    elif name == "tail_sampling":
        assert set(config) <= TAIL_SAMPLING
        for policy in config["policies"]:
            assert set(policy) <= POLICY
            assert set(policy) == {"name", "type", policy["type"]}
            assert set(policy[policy["type"]]) <= POLICY_CONFIGS[policy["type"]]
        codes = [code for p in config["policies"] if p["type"] == "status_code" for code in p["status_code"]
                 ["status_codes"]]
        assert set(codes) <= STATUS_CODES
    # attributes/scrub and resource/loki: the compose collector's, which that stack runs (test above)


@pytest.mark.parametrize("path", [AGENT_VALUES, GATEWAY_VALUES])
def test_every_component_and_key_is_in_the_recorded_tables(path: str) -> None:
    config = values(path)["config"]
    for name, processor in config["processors"].items():
        if processor is not None:
            check_processor(name, processor)
    for name, exporter in config["exporters"].items():
        if exporter is not None:
            check_exporter(name, exporter)
    otlp = config["receivers"]["otlp"]["protocols"]
    assert set(otlp) <= {"grpc", "http"}


# --- dashboards and rules ---------------------------------------------------------------------------------------------

def test_the_dashboard_configmaps_carry_the_sidecar_label_and_the_exact_json() -> None:
    configmaps = rendered(DASHBOARD_CONFIGMAPS)
    dashboards = dashboard_files(load_with_overrides(None))
    assert len(configmaps) == len(dashboards) == 5
    for configmap, (path, text) in zip(configmaps, dashboards.items(), strict=True):
        assert (configmap["apiVersion"], configmap["kind"]) == ("v1", "ConfigMap")
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["namespace"] == NAMESPACE
        assert configmap["data"] == {Path(path).name: text}
        assert text == (ROOT / path).read_text(encoding="utf-8")  # what the compose stack provisions
        # `kubectl apply` (client side) copies the object into the last-applied-configuration annotation, and
        # all annotations of an object together may hold 256 KiB (a ConfigMap itself: 1 MiB)
        assert len(json.dumps(configmap).encode()) < 256 * 1024


def test_the_prometheus_rule_groups_are_the_compose_rule_files() -> None:
    (rule,) = rendered(PROMETHEUS_RULES)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["namespace"] == NAMESPACE
    compose = yaml.safe_load((ROOT / RULES).read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == compose["groups"]
