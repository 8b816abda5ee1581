"""The compose stack starts: pinned tags exist and every health check runs a program its image has.

No Docker engine runs here, so what an image contains is recorded below from its Dockerfile at the
pinned tag (the citation is kept next to each entry), and the compose file is checked against that
record. A Loki health check calling ``/busybox/wget`` in a distroless image left Loki unhealthy for
ever and, through ``depends_on: condition: service_healthy``, kept the collector, Grafana, the demo
and the traffic generator from starting; these tests fail on that state.

When a tag changes, re-read the image's Dockerfile at the new tag and update the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from qm_otel.cli.stack import default_endpoints

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@dataclass(frozen=True)
class Image:
    """What one pinned image is, and where that was read."""

    release: str  # where the tag is published
    dockerfile: str  # the Dockerfile at that tag, and what it says
    programs: frozenset[str]  # absolute paths of programs the image contains
    shell: bool  # whether /bin/sh exists (CMD-SHELL health checks need it)


IMAGES: dict[str, Image] = {
    "busybox:1.37.0": Image(
        release="docker-library/busybox versions.json: latest-1 = 1.37.0 "
                "(generate-stackbrew-library.sh publishes the full version as a tag)",
        dockerfile="docker-library/busybox Dockerfile-builder.template: make defconfig; "
                   "busybox --install /bin",
        programs=frozenset({"/bin/busybox", "/bin/sh", "/bin/chown", "/bin/wget"}),
        shell=True,
    ),
    "otel/opentelemetry-collector-contrib:0.159.0": Image(
        release="open-telemetry/opentelemetry-collector-releases tag v0.159.0 (2026-08-18)",
        dockerfile="distributions/otelcol-contrib/Dockerfile at v0.159.0: FROM scratch, "
                   "COPY otelcol-contrib /otelcol-contrib (and CA certificates) only",
        programs=frozenset({"/otelcol-contrib"}),
        shell=False,
    ),
    "grafana/loki:3.7.6": Image(
        release="grafana/loki tag v3.7.6 (2026-08-05), the newest 3.7.x; there is no v3.7.8",
        dockerfile="cmd/loki/Dockerfile at v3.7.6: FROM gcr.io/distroless/static:nonroot, "
                   "COPY loki /usr/bin/loki; cmd/loki/health.go: `loki -health [-health.url=URL]`",
        programs=frozenset({"/usr/bin/loki"}),
        shell=False,
    ),
    "grafana/tempo:3.0.3": Image(
        release="grafana/tempo tag v3.0.3 (2026-08-13); CHANGELOG.md at v3.0.3: Go 1.26.5, grpc v1.82.1",
        dockerfile="cmd/tempo/Dockerfile at v3.0.3: FROM gcr.io/distroless/static-debian12, "
                   "COPY tempo /tempo; cmd/tempo/main.go: flags -health and -health.url",
        programs=frozenset({"/tempo"}),
        shell=False,
    ),
    "prom/prometheus:v3.13.2": Image(
        release="prometheus/prometheus tag v3.13.2 (2026-07-30); CHANGELOG.md: x/text CVE-2026-56852, grpc",
        dockerfile="Dockerfile at v3.13.2: FROM quay.io/prometheus/busybox-linux-<arch> "
                   "(prometheus/busybox: FROM busybox:uclibc), /bin/prometheus, /bin/promtool",
        programs=frozenset({"/bin/prometheus", "/bin/promtool", "/bin/sh", "/bin/wget"}),
        shell=True,
    ),
    "prom/alertmanager:v0.34.0": Image(
        release="prometheus/alertmanager tag v0.34.0 (2026-08-16), the newest; there is no v0.35.0",
        dockerfile="Dockerfile at v0.34.0: FROM quay.io/prometheus/busybox-linux-<arch>, "
                   "/bin/alertmanager, /bin/amtool",
        programs=frozenset({"/bin/alertmanager", "/bin/amtool", "/bin/sh", "/bin/wget"}),
        shell=True,
    ),
    "grafana/grafana:12.4.9": Image(
        release="endoflife-date/release-data releases/grafana.json: 12.4.9 (2026-08-18), the newest "
                "12.4.x; there is no 12.4.10",
        dockerfile="grafana/grafana Dockerfile, final stage (Alpine, the default image variant): "
                   "apk add --no-cache ca-certificates bash curl tzdata musl-utils",
        programs=frozenset({"/usr/bin/curl", "/bin/sh", "/bin/bash"}),
        shell=True,
    ),
    "qm-otel-demo:local": Image(
        release="built here from ./Dockerfile",
        dockerfile="./Dockerfile: FROM python:3.11-slim (docker-library/python links "
                   "/usr/local/bin/python -> python3)",
        programs=frozenset({"/usr/local/bin/python", "/usr/local/bin/opentelemetry-instrument",
                            "/usr/local/bin/uvicorn", "/bin/sh"}),
        shell=True,
    ),
}

# Tags that were pinned once and that their projects never published.
NEVER_RELEASED = {"grafana/loki:3.7.8", "prom/alertmanager:v0.35.0", "grafana/grafana:12.4.10"}

# Prometheus' duration syntax (prometheus/common model.ParseDuration).
PROMETHEUS_DURATION = re.compile(r"(?=.)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]  # type: ignore[no-any-return]


def with_healthcheck() -> list[str]:
    return sorted(name for name, service in services().items() if "healthcheck" in service)


def test_every_image_tag_is_a_confirmed_release() -> None:
    for name, service in services().items():
        image = service["image"]
        assert image not in NEVER_RELEASED, f"{name}: {image} was never published"
        assert image in IMAGES, f"{name}: {image} is not in the table of confirmed releases"


def test_the_demo_image_is_built_from_the_recorded_base() -> None:
    built = {name for name, service in services().items() if "build" in service}
    assert built == {"demo", "traffic"}
    assert {services()[name]["image"] for name in built} == {"qm-otel-demo:local"}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["python:3.11-slim"]
    assert 'CMD ["opentelemetry-instrument", "uvicorn"' in dockerfile


def test_the_services_that_must_be_healthy_have_health_checks() -> None:
    assert with_healthcheck() == ["alertmanager", "demo", "grafana", "loki", "prometheus", "tempo"]
    for name, service in services().items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{name} waits for {dependency}'s health check"


@pytest.mark.parametrize("name", with_healthcheck())
def test_each_health_check_runs_a_program_its_image_contains(name: str) -> None:
    service = services()[name]
    image = IMAGES[service["image"]]
    test = service["healthcheck"]["test"]
    assert isinstance(test, list), f"{name}: use the exec form, a list"
    if test[0] == "CMD-SHELL":
        assert image.shell, f"{name}: CMD-SHELL needs /bin/sh, which {service['image']} lacks ({image.dockerfile})"
        program = test[1].split()[0]
    else:
        assert test[0] == "CMD", name
        program = test[1]
    assert program.startswith("/"), f"{name}: name the program by its path in the image, not via PATH"
    assert program in image.programs, (
        f"{name}: {program} is not in {service['image']} ({image.dockerfile})")
    assert not any(str(arg).startswith("/busybox") for arg in test), name
    check = service["healthcheck"]
    assert {"interval", "timeout", "retries", "start_period"} <= set(check), name


def test_no_health_check_in_an_image_without_a_shell_needs_one() -> None:
    for name in with_healthcheck():
        image = IMAGES[services()[name]["image"]]
        if not image.shell:
            assert services()[name]["healthcheck"]["test"][0] == "CMD", name


def test_loki_and_tempo_use_their_own_health_commands() -> None:
    loki_port = yaml.safe_load((ROOT / "collector/loki.yaml").read_text())["server"]["http_listen_port"]
    tempo_port = yaml.safe_load((ROOT / "collector/tempo.yaml").read_text())["server"]["http_listen_port"]
    assert services()["loki"]["healthcheck"]["test"] == [
        "CMD", "/usr/bin/loki", "-health", f"-health.url=http://127.0.0.1:{loki_port}/ready"]
    assert services()["tempo"]["healthcheck"]["test"] == [
        "CMD", "/tempo", "-health", f"-health.url=http://127.0.0.1:{tempo_port}/ready"]


def test_the_collector_has_no_health_check_and_nothing_waits_for_it_to_be_healthy() -> None:
    assert "healthcheck" not in services()["otel-collector"]  # FROM scratch, no health command
    for name, service in services().items():
        condition = (service.get("depends_on") or {}).get("otel-collector")
        if condition is not None:
            assert condition["condition"] == "service_started", name


@pytest.mark.parametrize("name", ["loki", "tempo", "prometheus", "alertmanager", "grafana"])
def test_health_checks_probe_what_qm_otel_check_probes(name: str) -> None:
    test = services()[name]["healthcheck"]["test"]
    [url] = [str(arg).split("=", 1)[-1] for arg in test if "http://" in str(arg)]
    inside, outside = urlsplit(url), urlsplit(default_endpoints()[name].url)
    assert (inside.hostname, inside.port, inside.path) == ("127.0.0.1", outside.port, outside.path)


def test_prometheus_retention_is_read_from_its_config_file() -> None:
    command = services()["prometheus"]["command"]
    assert not [arg for arg in command if arg.startswith("--storage.tsdb.retention")]  # deprecated flags
    config = yaml.safe_load((ROOT / "collector/prometheus.yml").read_text())
    retention = config["storage"]["tsdb"]["retention"]
    assert set(retention) <= {"time", "size", "percentage"}  # TSDBRetentionConfig (config/config.go)
    assert retention["time"] == "15d"
    assert PROMETHEUS_DURATION.fullmatch(retention["time"])
    # and the "where to edit" note at the top of the compose file sends readers there
    assert re.search(r"metrics: collector/prometheus\.yml \(storage\.tsdb\.retention\.time", COMPOSE.read_text())


def test_each_pinned_image_cites_its_release_in_a_comment() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = re.fullmatch(r"  ([\w-]+):", line)
        if not match or match.group(1) not in services() or "build" in services()[match.group(1)]:
            continue
        comments = []
        for previous in reversed(lines[:index]):
            if not previous.startswith("  #"):
                break
            comments.append(previous)
        version = services()[match.group(1)]["image"].rsplit(":", 1)[1].lstrip("v")
        assert any(version in comment for comment in comments), f"{match.group(1)}: cite the {version} release"


def test_the_hash_comment_names_the_algorithm_the_collector_uses() -> None:
    text = (ROOT / "collector/otel-collector.yaml").read_text(encoding="utf-8")
    assert "SHA-1" not in text
    assert "SHA-256" in text
