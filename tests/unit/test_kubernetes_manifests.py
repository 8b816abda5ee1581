"""Every YAML file under deploy/kubernetes/ checked against pinned schemas, without a cluster.

Kubernetes objects (a document with apiVersion and kind) are validated with jsonschema against the
schema of their kind and apiVersion vendored in tests/schemas/kubernetes/ (Kubernetes v1.33.0,
OpenTelemetry Operator v0.158.0, prometheus-operator v0.93.0; see its README). A kind with no
vendored schema fails: a new manifest brings its schema.

Helm values files are not objects: each is claimed by a chart below and checked against the chart
at its pinned version (tests/schemas/helm/): every key path it sets exists in the chart's own
values.yaml, or lies under a subtree the chart passes through to the application's configuration,
whose keys are checked against the compose stack's config for the same application or against the
key set named (with its source) in a Passthrough; an empty map in the chart's defaults (resources,
podAnnotations...) takes any keys, a list is replaced whole, and a key the chart documents only in
its values.schema.json counts. Where the chart has a values.schema.json, the values coalesced onto
the chart's defaults (as Helm does) must validate. A YAML file that holds no objects and that no
chart claims fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_SCHEMAS = ROOT / "tests" / "schemas" / "kubernetes"
HELM = ROOT / "tests" / "schemas" / "helm"

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Passthrough:
    """A values subtree the chart hands to the application as is.

    `reference`: (compose config file, path in it) whose keys the subtree's keys must be among;
    `keys`: the allowed keys at the subtree's top, with where they were read; neither: free-form
    (label names, data source definitions).
    """

    reference: tuple[str, Path_] | None = None
    keys: frozenset[str] | None = None


@dataclass(frozen=True)
class Chart:
    """A Helm chart at a pinned version and the passthrough subtrees of its values."""

    values: str
    schema: str | None = None
    passthrough: dict[Path_, Passthrough] = field(default_factory=dict)
    #: an overlay's base: the values file (under deploy/kubernetes) it is given after, as a second `-f`
    base: str | None = None
    #: a dependency's values key -> that subchart's values.yaml at the version the chart pins (Helm hands
    #: the subtree to the subchart, whose own defaults then hold the keys the parent does not repeat)
    subcharts: dict[Path_, str] = field(default_factory=dict)


LOKI = Chart(
    values="loki-7.3.0.values.yaml",
    schema="loki-7.3.0.values.schema.json",
    passthrough={
        # templates/_helpers.tpl / values.yaml `loki.config`: toYaml into Loki's config file.
        ("loki", "limits_config"): Passthrough(("collector/loki.yaml", ("limits_config",))),
        ("loki", "schemaConfig"): Passthrough(("collector/loki.yaml", ("schema_config",))),
        ("loki", "compactor"): Passthrough(("collector/loki.yaml", ("compactor",))),
    },
)

TEMPO = Chart(
    values="tempo-distributed-3.3.0.values.yaml",
    passthrough={
        # values.yaml `config`: toYaml .Values.overrides / .Values.storage.trace.s3 / the
        # metrics-generator's config into Tempo's config file.
        ("overrides", "defaults"): Passthrough(("collector/tempo.yaml", ("overrides", "defaults"))),
        # The chart's own ci/minio-storage-values.yaml at tempo-distributed-3.3.0 sets these keys.
        ("storage", "trace", "s3"): Passthrough(
            keys=frozenset({"bucket", "endpoint", "access_key", "secret_key", "insecure"})
        ),
        ("metricsGenerator", "config", "registry", "external_labels"): Passthrough(),
    },
)

KUBE_PROMETHEUS_STACK = Chart(
    values="kube-prometheus-stack-88.5.3.values.yaml",
    passthrough={
        # Copied into the Prometheus resource's spec.otlp: its properties in
        # example/prometheus-operator-crd/monitoring.coreos.com_prometheuses.yaml at v0.93.0.
        ("prometheus", "prometheusSpec", "otlp"): Passthrough(
            keys=frozenset(
                {
                    "convertHistogramsToNHCB",
                    "ignoreResourceAttributes",
                    "keepIdentifyingResourceAttributes",
                    "labelNamePreserveMultipleUnderscores",
                    "labelNameUnderscoreSanitization",
                    "promoteAllResourceAttributes",
                    "promoteResourceAttributes",
                    "promoteScopeMetadata",
                    "translationStrategy",
                }
            )
        ),
        # templates/grafana/configmaps-datasources.yaml at 88.5.3 reads these three.
        ("grafana", "sidecar", "datasources", "exemplarTraceIdDestinations"): Passthrough(
            keys=frozenset({"datasourceUid", "traceIdLabelName", "urlDisplayLabel"})
        ),
    },
    # Chart.yaml at 88.5.3: dependency grafana 12.11.1 (grafana-community/helm-charts)
    subcharts={("grafana",): "grafana-12.11.1.values.yaml"},
)

# The opentelemetry-collector chart's values are rendered by `qm-otel render` and checked in depth by
# tests/unit/test_kubernetes_render.py; here: its values.schema.json, as for every values file.
COLLECTOR = Chart(
    values="opentelemetry-collector-0.170.0.values.yaml",
    schema="opentelemetry-collector-0.170.0.values.schema.json",
    passthrough={("config",): Passthrough()},
)
COLLECTOR_AGENT_OVERLAY = Chart(values=COLLECTOR.values, schema=COLLECTOR.schema, passthrough=COLLECTOR.passthrough,
                                base="collector/agent-values.yaml")

VALUES_FILES: dict[str, Chart] = {
    "backends/loki-values.yaml": LOKI,
    "backends/tempo-values.yaml": TEMPO,
    "backends/kube-prometheus-stack-values.yaml": KUBE_PROMETHEUS_STACK,
    "collector/agent-values.yaml": COLLECTOR,
    "collector/gateway-values.yaml": COLLECTOR,
    "collector/agent-logs-values.yaml": COLLECTOR_AGENT_OVERLAY,
}


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.load_all(handle, Loader=_Loader) if doc is not None]


def _is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


@cache
def _schema_index() -> dict[tuple[str, str], Path]:
    """(apiVersion, kind) -> schema file, read from the schemas' own apiVersion/kind enums."""
    index: dict[tuple[str, str], Path] = {}
    for path in sorted(K8S_SCHEMAS.glob("*.json")):
        props = json.loads(path.read_text(encoding="utf-8")).get("properties", {})
        for api_version in props.get("apiVersion", {}).get("enum", []):
            for kind in props.get("kind", {}).get("enum", []):
                index[(api_version, kind)] = path
    return index


@cache
def _validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def object_errors(doc: Any) -> list[str]:
    """Why a Kubernetes object does not validate (empty: it does)."""
    if not _is_object(doc):
        return ["not a Kubernetes object (no apiVersion/kind)"]
    key = (str(doc["apiVersion"]), str(doc["kind"]))
    schema = _schema_index().get(key)
    if schema is None:
        return [f"no vendored schema for apiVersion={key[0]} kind={key[1]} in {K8S_SCHEMAS}"]
    name = (doc.get("metadata") or {}).get("name", "?")
    return [
        f"{key[1]}/{name} at {'.'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
        for err in _validator(schema).iter_errors(doc)
    ]


def _key_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every mapping key path; list items of mappings are walked as if they were one mapping."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = (*prefix, str(key))
            yield path
            yield from _key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            yield from _key_paths(item, prefix)


def _reference_keys(node: Any) -> set[Path_]:
    return set(_key_paths(node))


@cache
def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)


def _dig(node: Any, path: Path_) -> Any:
    for key in path:
        node = node[key]
    return node


def _coalesce(defaults: Any, values: Any) -> Any:
    """Helm's merge of user values onto chart defaults: maps merge, null deletes, the rest replaces."""
    if not (isinstance(defaults, dict) and isinstance(values, dict)):
        return values
    merged = dict(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _coalesce(defaults.get(key), value)
    return merged


@cache
def _helm_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((HELM / name).read_text(encoding="utf-8"))
    return schema


@cache
def _helm_validator(name: str) -> jsonschema.protocols.Validator:
    """Helm validates values.schema.json as Draft 7 (the charts here say draft-07 or no draft)."""
    schema = _helm_schema(name)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _missing_in_defaults(defaults: Any, path: Path_) -> int | None:
    """Index of the first key of `path` the chart's values.yaml lacks (None: all there)."""
    node = defaults
    for depth, key in enumerate(path):
        if isinstance(node, list) or node == {}:
            # a list in the chart's defaults: the values file replaces it whole; an empty map
            # (resources, podAnnotations, nodeSelector...): the chart passes it through as is
            return None
        if not isinstance(node, dict) or key not in node:
            return depth
        node = node[key]
    return None


def _schema_has(schema: dict[str, Any], path: Path_) -> bool:
    """Whether values.schema.json declares `path` (keys a chart documents only in comments)."""
    node: Any = schema
    for key in path:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            *_, section, name = node["$ref"].split("/")
            node = schema.get(section, {}).get(name)
        props = node.get("properties", {}) if isinstance(node, dict) else {}
        if key not in props:
            return False
        node = props[key]
    return True


def values_errors(values: Any, chart: Chart) -> list[str]:
    """Key paths the chart does not know, and values.schema.json errors."""
    defaults = _load_yaml(HELM / chart.values)
    errors: list[str] = []
    for path in _key_paths(values):
        through = next((p for p in chart.passthrough if path[: len(p)] == p), None)
        if through is not None:
            if len(path) > len(through):
                errors.extend(_passthrough_error(path, through, chart.passthrough[through]))
            continue
        missing = _missing_in_defaults(defaults, path)
        sub = next((p for p in chart.subcharts if path[: len(p)] == p and len(path) > len(p)), None)
        if missing is not None and sub is not None:
            in_sub = _missing_in_defaults(_load_yaml(HELM / chart.subcharts[sub]), path[len(sub) :])
            missing = None if in_sub is None else len(sub) + in_sub
        if missing is not None and not (chart.schema and _schema_has(_helm_schema(chart.schema), path)):
            errors.append(
                f"{'.'.join(path)}: no `{path[missing]}` at {'.'.join(path[:missing]) or '<root>'} in {chart.values}"
            )
    if chart.schema is not None:
        # Helm validates the values coalesced onto the chart's defaults.
        merged = _coalesce(defaults, values)
        errors.extend(f"{chart.schema}: {err.message}" for err in _helm_validator(chart.schema).iter_errors(merged))
    return sorted(set(errors))


def _passthrough_error(path: Path_, base: Path_, spec: Passthrough) -> list[str]:
    rest = path[len(base) :]
    if spec.keys is not None and rest[0] not in spec.keys:
        return [f"{'.'.join(path)}: `{rest[0]}` is not among {sorted(spec.keys)}"]
    if spec.reference is not None:
        file, ref_path = spec.reference
        known = _reference_keys(_dig(_load_yaml(ROOT / file), ref_path))
        if rest not in known:
            return [f"{'.'.join(path)}: `{'.'.join(rest)}` is not in {file} under {'.'.join(ref_path)}"]
    return []


# ---- the files in the tree ----


def _object_files() -> list[Path]:
    return [p for p in _yaml_files() if any(_is_object(d) for d in _documents(p))]


def _values_files() -> list[Path]:
    return [p for p in _yaml_files() if not any(_is_object(d) for d in _documents(p))]


def test_deploy_tree_has_files() -> None:
    assert _object_files(), f"no Kubernetes manifests under {DEPLOY}"
    assert _values_files(), f"no Helm values files under {DEPLOY}"


@pytest.mark.parametrize("path", _object_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates(path: Path) -> None:
    errors: list[str] = []
    for number, doc in enumerate(_documents(path), start=1):
        if not _is_object(doc):
            errors.append(f"document {number}: holds no apiVersion/kind among Kubernetes objects")
            continue
        errors.extend(f"document {number}: {e}" for e in object_errors(doc))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", _values_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_values_file_matches_its_chart(path: Path) -> None:
    relative = path.relative_to(DEPLOY).as_posix()
    chart = VALUES_FILES.get(relative)
    assert chart is not None, f"{relative}: neither Kubernetes objects nor a values file claimed in VALUES_FILES"
    errors = values_errors(_load_yaml(path), chart)
    if chart.base is not None:
        # helm -f base -f overlay: the two files merge (maps merge, the rest replaces), then onto the defaults
        both = _coalesce(_load_yaml(DEPLOY / chart.base), _load_yaml(path))
        errors += [f"with {chart.base}: {e}" for e in values_errors(both, chart)]
    assert not errors, "\n".join(errors)


def test_every_claimed_values_file_exists() -> None:
    missing = [name for name in VALUES_FILES if not (DEPLOY / name).is_file()]
    # The collector values are another part of the tree; only the backends must be here.
    assert not [m for m in missing if m.startswith("backends/")], missing


def test_release_names_give_the_services_the_gateway_uses() -> None:
    """The install commands in the values files' headers name the releases the Services come from."""
    headers = {
        name: (DEPLOY / name).read_text(encoding="utf-8") for name in VALUES_FILES if name.startswith("backends/")
    }
    assert "helm install loki grafana/loki --version 7.3.0" in headers["backends/loki-values.yaml"]
    assert (
        "helm install tempo grafana-community/tempo-distributed --version 3.3.0"
        in headers["backends/tempo-values.yaml"]
    )
    assert (
        "helm install kube-prometheus-stack prometheus-community/kube-prometheus-stack --version 88.5.3"
        in headers["backends/kube-prometheus-stack-values.yaml"]
    )


# ---- the checks catch what they should ----

_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "x", "namespace": "observability"},
    "spec": {
        "selector": {"matchLabels": {"app": "x"}},
        "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        },
    },
}


def test_a_valid_deployment_passes() -> None:
    assert object_errors(_DEPLOYMENT) == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # an unknown field (strict schemas): `replica` for `replicas`
        ({**_DEPLOYMENT, "spec": {**_DEPLOYMENT["spec"], "replica": 2}}, "replica"),
        # a required field missing
        ({**_DEPLOYMENT, "spec": {"template": _DEPLOYMENT["spec"]["template"]}}, "selector"),
        # a wrong type
        ({**_DEPLOYMENT, "spec": {**_DEPLOYMENT["spec"], "replicas": "two"}}, "replicas"),
        # a kind with no vendored schema
        ({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"}}, "no vendored schema"),
        # an apiVersion the kind does not have here
        ({**_DEPLOYMENT, "apiVersion": "apps/v1beta1"}, "no vendored schema"),
        # a CRD field outside the Operator's enum
        (
            {
                "apiVersion": "opentelemetry.io/v1alpha1",
                "kind": "Instrumentation",
                "metadata": {"name": "x"},
                "spec": {"sampler": {"type": "sometimes"}},
            },
            "sometimes",
        ),
        # a PrometheusRule with a field prometheus-operator does not have
        (
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "x"},
                "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "1", "fore": "5m"}]}]},
            },
            "fore",
        ),
    ],
    ids=["unknown-field", "missing-required", "wrong-type", "unknown-kind", "unknown-version", "crd-enum", "crd-field"],
)
def test_a_broken_manifest_fails(doc: dict[str, Any], expected: str) -> None:
    errors = object_errors(doc)
    assert errors, f"expected a failure mentioning {expected!r}"
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("values", "chart", "expected"),
    [
        ({"deploymentMode": "SimpleScalable", "lokii": {}}, LOKI, "lokii"),
        ({"gateway": {"replica": 2}}, LOKI, "replica"),
        ({"loki": {"limits_config": {"otlp_confg": {}}}}, LOKI, "otlp_confg"),
        ({"traces": {"otlp": {"grpc": {"enable": True}}}}, TEMPO, "enable"),
        ({"storage": {"trace": {"s3": {"bucket_name": "x"}}}}, TEMPO, "bucket_name"),
        (
            {"prometheus": {"prometheusSpec": {"otlp": {"promoteAttributes": []}}}},
            KUBE_PROMETHEUS_STACK,
            "promoteAttributes",
        ),
        ({"loki": {"rulerConfig": {"storage": "local"}}}, LOKI, "loki-7.3.0.values.schema.json"),
        # a key neither kube-prometheus-stack nor its Grafana subchart knows (folderAnnotation is the real one)
        ({"grafana": {"sidecar": {"dashboards": {"folderAnnotations": "x"}}}}, KUBE_PROMETHEUS_STACK,
         "folderAnnotations"),
    ],
    ids=["top-level", "nested", "passthrough-reference", "tempo", "passthrough-keys", "kps-otlp", "values-schema",
         "subchart"],
)
def test_a_broken_values_file_fails(values: dict[str, Any], chart: Chart, expected: str) -> None:
    errors = values_errors(values, chart)
    assert any(expected in e for e in errors), errors


def test_a_subchart_key_the_parent_lacks_is_checked_in_the_subchart() -> None:
    # kube-prometheus-stack's values.yaml has no folderAnnotation; the Grafana subchart's has it (null)
    kps_defaults = _load_yaml(HELM / KUBE_PROMETHEUS_STACK.values)
    assert "folderAnnotation" not in kps_defaults["grafana"]["sidecar"]["dashboards"]
    values = {"grafana": {"sidecar": {"dashboards": {"folderAnnotation": "grafana_folder",
                                                     "provider": {"foldersFromFilesStructure": True}}}}}
    assert values_errors(values, KUBE_PROMETHEUS_STACK) == []
