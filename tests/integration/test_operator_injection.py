"""qm-otel injected as the OpenTelemetry Operator injects a Python image, without a cluster (issue 24, items 1 and 2).

What the Operator does (read at v0.158.0: ``internal/instrumentation/python.go`` and ``sdk.go``): an init
container copies the image's ``/autoinstrumentation/.`` into an emptyDir mounted at
``/otel-auto-instrumentation-python``; the application container gets ``PYTHONPATH`` =
``<dir>/opentelemetry/instrumentation/auto_instrumentation:<dir>`` (before any ``PYTHONPATH`` it had), the
downward-API variables (``OTEL_NODE_IP``, ``OTEL_POD_IP``, ``OTEL_RESOURCE_ATTRIBUTES_POD_NAME``,
``OTEL_RESOURCE_ATTRIBUTES_NODE_NAME``), the Instrumentation's ``python.env``, the Python defaults
(``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``, ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER=otlp``), the exporter
endpoint, ``OTEL_SERVICE_NAME``, ``OTEL_PROPAGATORS``, the sampler and, last, ``OTEL_RESOURCE_ATTRIBUTES``
built from the pod (``k8s.*``, ``service.instance.id``, ``service.namespace``, ``service.version``) with
``$(VAR)`` references the kubelet expands.

Here: the image's package set (``deploy/kubernetes/autoinstrumentation-requirements.txt`` and the wheel built
from this checkout) is installed with the image's own ``pip install --no-deps --target`` command; an
application virtualenv holds its own FastAPI 0.110.0 and pydantic < 2.8 and uvicorn (from the index, through
pip's cache); a real uvicorn serves ``tests/integration/apps/operator_app.py`` from that virtualenv with only
that environment (built from ``deploy/kubernetes/instrumentation.yaml`` and ``sample-app.yaml``, so the
manifests and the test cannot drift), and a real OTLP receiver checks what arrives. No
``opentelemetry-instrument``, no code change in the app: ``sitecustomize`` loads qm-otel's distro and
configurator through their entry points.

Exporting is left at the SDK's defaults (5 s span batches, 60 s metric interval): everything the test
checks arrives through the flush at SIGTERM.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
import venv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import service as svc
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

K8S = svc.ROOT / "deploy" / "kubernetes"
REQUIREMENTS = K8S / "autoinstrumentation-requirements.txt"
DOCKERFILE = svc.ROOT / "Dockerfile.autoinstrumentation"
#: the image's install command (Dockerfile.autoinstrumentation), the directory, list and wheel aside
PIP_TARGET = ("pip", "install", "--no-deps", "--target")
#: what the application brings itself: never in the injected directory
APPLICATION_PACKAGES = ("fastapi", "starlette", "pydantic", "pydantic-core", "httpx", "httpcore", "uvicorn",
                        "anyio", "sniffio", "h11", "annotated-types", "click")
#: the application's own framework, older than anything qm-otel's test venv has
APP_REQUIREMENTS = ("fastapi==0.110.0", "pydantic>=2,<2.8", "uvicorn>=0.30,<1")

# what python.go (v0.158.0) sets
MOUNT = "/otel-auto-instrumentation-python"
PYTHONPATH = f"{MOUNT}/opentelemetry/instrumentation/auto_instrumentation:{MOUNT}"
PYTHON_DEFAULTS = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_EXPORTER": "otlp",
                   "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"}
# the pod the Deployment of sample-app.yaml makes, as the downward API and the Operator see it
NAMESPACE = "shop"
POD = "qm-otel-sample-6d5f7c9b8-x2x9z"
REPLICASET = "qm-otel-sample-6d5f7c9b8"
NODE = "node-a"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _instrumentation() -> dict[str, Any]:
    [document] = [d for d in _documents("instrumentation.yaml") if d["kind"] == "Instrumentation"]
    return document


def _deployment() -> dict[str, Any]:
    [document] = [d for d in _documents("sample-app.yaml") if d["kind"] == "Deployment"]
    return document


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: a variable defined earlier in the list, else left as written."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def operator_environment(mount: str, endpoint: str) -> dict[str, str]:
    """The application container's environment after the Operator's webhook and the kubelet, in their order.

    ``mount`` stands for /otel-auto-instrumentation-python, ``endpoint`` for the agent's address (the
    Instrumentation's endpoint, whose scheme is kept; its host and port become the receiver's).
    """
    spec = _instrumentation()["spec"]
    [container] = [c for c in _deployment()["spec"]["template"]["spec"]["containers"] if c["name"] == "app"]
    pairs: list[tuple[str, str]] = [("OTEL_NODE_IP", "127.0.0.1"), ("OTEL_POD_IP", "127.0.0.1")]
    pairs += [(e["name"], e["value"]) for e in container.get("env", [])]

    def add(name: str, value: str) -> None:  # appendIfNotSet
        if all(n != name for n, _ in pairs):
            pairs.append((name, value))

    for e in spec["python"].get("env", []):
        add(e["name"], e["value"])
    add("PYTHONPATH", PYTHONPATH.replace(MOUNT, mount))
    for e in spec.get("env", []):
        add(e["name"], e["value"])
    for name, value in PYTHON_DEFAULTS.items():
        add(name, value)
    add("OTEL_SERVICE_NAME", _deployment()["metadata"]["name"])
    agent = urlsplit(spec["exporter"]["endpoint"])
    add("OTEL_EXPORTER_OTLP_ENDPOINT", f"{agent.scheme}://{urlsplit(endpoint).netloc}{agent.path}")
    pairs.append(("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", POD))
    image_tag = container["image"].rpartition(":")[2]
    resource = {
        "k8s.container.name": container["name"], "k8s.deployment.name": _deployment()["metadata"]["name"],
        "k8s.namespace.name": NAMESPACE, "k8s.node.name": "$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME)",
        "k8s.pod.name": "$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)", "k8s.replicaset.name": REPLICASET,
        "service.instance.id": f"{NAMESPACE}.$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME).{container['name']}",
        "service.namespace": NAMESPACE, "service.version": image_tag,
    }
    pairs.append(("OTEL_RESOURCE_ATTRIBUTES_NODE_NAME", NODE))
    add("OTEL_PROPAGATORS", ",".join(spec["propagators"]))
    add("OTEL_TRACES_SAMPLER", spec["sampler"]["type"])
    add("OTEL_TRACES_SAMPLER_ARG", spec["sampler"]["argument"])
    pairs.append(("OTEL_RESOURCE_ATTRIBUTES", ",".join(f"{k}={v}" for k, v in sorted(resource.items()))))
    env: dict[str, str] = {}
    for name, value in pairs:
        env[name] = _expand(value, env)
    return env


def _requirement_lines() -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _distributions(directory: Path) -> dict[str, email.message.Message]:
    """The distributions installed in ``directory`` (a ``pip install --target`` one), by canonical name."""
    found = {}
    for info in directory.glob("*.dist-info"):
        metadata = email.message_from_string((info / "METADATA").read_text())
        found[canonicalize_name(metadata["Name"])] = metadata
    return found


@dataclass(frozen=True)
class Injected:
    target: Path
    app_python: Path
    seconds: dict[str, float]


def _timed(seconds: dict[str, float], what: str, command: list[str], **kwargs: Any) -> None:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    seconds[what] = time.monotonic() - started
    assert done.returncode == 0, f"{what}: {' '.join(command)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> Injected:
    """The image's directory and the application's virtualenv, made side by side."""
    work = tmp_path_factory.mktemp("operator")
    seconds: dict[str, float] = {}
    started = time.monotonic()
    _timed(seconds, "wheel", [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                              "-w", str(work / "dist"), str(svc.ROOT)])
    [wheel] = (work / "dist").glob("qm_otel-*.whl")
    target = work / "otel-auto-instrumentation-python"
    app = work / "app-venv"
    environ = {k: v for k, v in os.environ.items() if k not in {"PIP_CONSTRAINT", "PIP_REQUIREMENT", "PYTHONPATH"}}

    def image() -> None:  # the Dockerfile's command
        _timed(seconds, "target install", [sys.executable, "-m", *PIP_TARGET, str(target), "-q",
                                           "--disable-pip-version-check", "-r", str(REQUIREMENTS), str(wheel)],
               env=environ)

    def application() -> None:
        # the application's own virtualenv; this pip (newer than the one ensurepip ships, and far quicker to
        # resolve against the index) installs into it with --python
        began = time.monotonic()
        venv.create(app, with_pip=False)
        seconds["app venv"] = time.monotonic() - began
        _timed(seconds, "app install", [sys.executable, "-m", "pip", "--python", str(app / "bin" / "python"),
                                        "install", "-q", "--disable-pip-version-check", *APP_REQUIREMENTS],
               env=environ)

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(image), pool.submit(application)]:
            future.result()
    seconds["fixture"] = time.monotonic() - started
    return Injected(target, app / "bin" / "python", seconds)


# ---- the directory --------------------------------------------------------------------------------------------


def test_the_dockerfile_installs_the_listed_set_with_the_tested_command() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY deploy/kubernetes/autoinstrumentation-requirements.txt ./" in text
    runs = re.findall(r"pip install (--no-deps --target workspace -r autoinstrumentation-requirements\.txt "
                      r"dist/qm_otel-\*\.whl)", text)
    assert len(runs) == 2, "the glibc and musl stages install the same list the same way"
    assert " ".join(PIP_TARGET) in text
    assert "COPY --from=build /operator-build/workspace /autoinstrumentation\n" in text
    assert "COPY --from=build-musl /operator-build/workspace /autoinstrumentation-musl\n" in text
    assert re.search(r"^FROM busybox", text, re.MULTILINE), "the init container runs cp"


def test_the_listed_opentelemetry_pins_are_pyprojects() -> None:
    project = tomllib.loads((svc.ROOT / "pyproject.toml").read_text())["project"]
    listed = {canonicalize_name(r.name): r for r in _requirement_lines()}
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in listed.values())
    wanted = [Requirement(text) for text in project["dependencies"]]
    wanted += [Requirement(t) for extra in ("db", "redis", "requests", "celery")
               for t in project["optional-dependencies"][extra]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in listed, f"{name} (pyproject.toml) is missing from {REQUIREMENTS.name}"
        version = next(iter(listed[name].specifier)).version
        assert requirement.specifier.contains(version, prereleases=True), (name, version, str(requirement))
    assert not any(canonicalize_name(r.name) in APPLICATION_PACKAGES for r in wanted), "run-time requirements"


def test_the_directory_holds_exactly_the_list_and_no_application_package(injected: Injected) -> None:
    installed = _distributions(injected.target)
    listed = {canonicalize_name(r.name): next(iter(r.specifier)).version for r in _requirement_lines()}
    assert {name: m["Version"] for name, m in installed.items() if name != "qm-otel"} == listed
    assert installed["qm-otel"]["Version"]
    assert not [name for name in installed if name in APPLICATION_PACKAGES]
    top = {p.name for p in injected.target.iterdir()}
    assert not top & {"fastapi", "starlette", "pydantic", "pydantic_core", "httpx", "httpcore", "uvicorn", "anyio"}
    # closed: every requirement of every distribution here (extras aside) is satisfied here
    marker_env = default_environment()
    missing = []
    for name, metadata in installed.items():
        for text in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({**marker_env, "extra": ""}):
                continue
            have = installed.get(canonicalize_name(requirement.name))
            if have is None or not requirement.specifier.contains(have["Version"], prereleases=True):
                missing.append(f"{name} requires {requirement}")
    assert missing == []
    # the sitecustomize the Operator's PYTHONPATH points at, and qm-otel's entry points beside it
    assert (injected.target / "opentelemetry/instrumentation/auto_instrumentation/sitecustomize.py").is_file()
    [points] = injected.target.glob("qm_otel-*.dist-info/entry_points.txt")
    for group in ("opentelemetry_distro", "opentelemetry_configurator"):
        assert f"[{group}]\nqm_otel = " in points.read_text()


# ---- the manifests and the environment ------------------------------------------------------------------------


def test_the_environment_is_the_one_the_manifests_make() -> None:
    """The Instrumentation's fields, as the injected environment carries them (what the served test uses)."""
    spec = _instrumentation()["spec"]
    env = operator_environment(MOUNT, "http://127.0.0.1:4318")
    assert env["PYTHONPATH"] == PYTHONPATH
    assert env["OTEL_PROPAGATORS"] == "tracecontext,baggage" == ",".join(spec["propagators"])
    assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "1.0")
    assert spec["exporter"]["endpoint"] == "http://qm-otel-agent.observability.svc.cluster.local:4318"
    assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).scheme == urlsplit(spec["exporter"]["endpoint"]).scheme
    assert {e["name"]: e["value"] for e in spec["python"]["env"]}.items() <= env.items()
    assert env["QM_OTEL_LOG_FORMAT"] == "json"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert f"k8s.pod.name={POD}" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert f"k8s.node.name={NODE}" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert spec["python"]["image"].startswith("ghcr.io/qm-otel/autoinstrumentation-python:")
    # the app's pod template asks for it, and probes what qm-otel serves
    template = _deployment()["spec"]["template"]
    instrumentation = f"{_instrumentation()['metadata']['namespace']}/{_instrumentation()['metadata']['name']}"
    assert template["metadata"]["annotations"]["instrumentation.opentelemetry.io/inject-python"] == instrumentation
    [container] = template["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


# ---- the application, served ----------------------------------------------------------------------------------


def test_the_app_runs_instrumented_on_its_own_framework(injected: Injected) -> None:
    started = time.monotonic()
    with OtlpReceiver().start() as receiver:
        env = operator_environment(str(injected.target), receiver.endpoint)
        # what the container image itself provides: its PATH and a home; nothing from this test process
        env |= {"PATH": f"{injected.app_python.parent}:/usr/local/bin:/usr/bin:/bin",
                "HOME": str(injected.target.parent), "LANG": "C.UTF-8"}
        port = svc.free_port()
        command = [str(injected.app_python.parent / "uvicorn"), "operator_app:app", "--app-dir",
                   str(svc.ROOT / "tests" / "integration" / "apps"), "--host", "127.0.0.1", "--port", str(port)]
        with svc.launch(command, port, env, cwd=injected.target.parent) as service:
            served = time.monotonic()
            versions = service.get("/versions").json()
            ids = [str(uuid.uuid4()) for _ in range(5)]
            answers = [service.get(f"/work/{n}", headers={"X-Correlation-ID": cid}) for n, cid in enumerate(ids)]
            ready = service.get("/readyz")
            code = service.terminate(timeout_s=30)
        stopped = time.monotonic()
        stderr, stdout = service.errors(), service.output()
        spans, logs, points = receiver.snapshot()
    print(f"\noperator injection: fixture {injected.seconds}, app start {served - started:.1f} s, "
          f"requests and SIGTERM {stopped - served:.1f} s, exit {code}")

    # the application's own framework, from its own virtualenv, with qm-otel loaded beside it
    assert versions["fastapi"] == "0.110.0"
    assert Version("2") <= Version(versions["pydantic"]) < Version("2.8"), versions
    assert versions["fastapi_file"].startswith(str(injected.app_python.parent.parent)), versions
    assert versions["pydantic_file"].startswith(str(injected.app_python.parent.parent)), versions
    assert versions["qm_otel_loaded"]
    # the directory on the path as the Operator puts it: before the app's site-packages
    path = versions["sys_path"]
    first, second = env["PYTHONPATH"].split(":")
    site = next(i for i, p in enumerate(path) if p.startswith(str(injected.app_python.parent.parent)) and
                p.endswith("site-packages"))
    assert path.index(first) + 1 == path.index(second) < site, path

    # a clean exit: uvicorn's graceful shutdown, then the re-raised SIGTERM (143 in a pod), or 0
    assert code in (0, -signal.SIGTERM), stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert "Finished server process" in stdout + stderr

    # correlation IDs as trace IDs, one server span per request
    for cid, answer in zip(ids, answers, strict=True):
        assert answer.status_code == 200
        assert answer.headers["X-Correlation-ID"] == cid
    assert ready.status_code == 200, ready.text
    servers = [s for s in spans if s.kind == 2]  # SPAN_KIND_SERVER
    work = [s for s in servers if s.name == "GET /work/{n}"]
    assert sorted(s.trace_id for s in work) == sorted(cid.replace("-", "") for cid in ids), [
        (s.name, s.trace_id) for s in servers]
    assert len(servers) == len(work) + 1, [s.name for s in servers]  # + GET /versions; probes are not traced

    # the resource: the k8s.* attributes the Operator built, expanded; the service from the manifests
    resource = work[0].resource
    assert {k: resource.get(k) for k in ("k8s.pod.name", "k8s.node.name", "k8s.namespace.name",
                                         "k8s.container.name", "k8s.deployment.name", "k8s.replicaset.name",
                                         "service.instance.id", "service.name", "service.version")} == {
        "k8s.pod.name": POD, "k8s.node.name": NODE, "k8s.namespace.name": NAMESPACE, "k8s.container.name": "app",
        "k8s.deployment.name": "qm-otel-sample", "k8s.replicaset.name": REPLICASET,
        "service.instance.id": f"{NAMESPACE}.{POD}.app", "service.name": "qm-otel-sample",
        "service.version": "1.0.0",
    }

    # the log records: the app's own, in the request's trace
    working = [r for r in logs if isinstance(r.body, str) and r.body.startswith("working ")]
    assert sorted(r.trace_id for r in working) == sorted(cid.replace("-", "") for cid in ids)
    assert all(r.resource.get("k8s.pod.name") == POD for r in working)
    # stdout: qm-otel's JSON lines (QM_OTEL_LOG_FORMAT=json from python.env)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "working 0" for line in lines), stdout[-3000:]

    # the metrics, flushed at SIGTERM (the 60 s interval never came round)
    durations = [p for p in points if p.name == "http.server.request.duration"]
    # cumulative points: the lifespan's flush and the shutdown's each export the running total
    assert max(p.count or 0 for p in durations if p.attributes.get("http.route") == "/work/{n}") == len(ids)
    assert {p.scope for p in durations} == {"qm_otel"}, "one stream: FastAPI's own telemetry stays off"
    assert durations[0].resource.get("k8s.pod.name") == POD


def test_nothing_in_the_directory_shadows_the_application(injected: Injected) -> None:
    """Every module the app venv has is imported from the app venv, the directory first on the path."""
    env = operator_environment(str(injected.target), "http://127.0.0.1:9")
    env |= {"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none"}
    code = ("import importlib, json, importlib.util as u; names = ('fastapi', 'starlette', 'pydantic', "
            "'pydantic_core', 'anyio', 'uvicorn', 'h11', 'sniffio', 'annotated_types', 'click', 'typing_inspection');"
            "print(json.dumps({n: importlib.import_module(n).__file__ for n in names if u.find_spec(n)}))")
    done = subprocess.run([str(injected.app_python), "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=injected.target.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.splitlines()[-1])
    app_root = str(injected.app_python.parent.parent)
    assert {"fastapi", "starlette", "pydantic", "pydantic_core", "anyio", "uvicorn", "h11"} <= files.keys()
    assert {name: path.startswith(app_root) for name, path in files.items()} == dict.fromkeys(files, True), files
    assert shutil.which("opentelemetry-instrument", path=str(injected.app_python.parent)) is None


def _served_then_stopped(app_python: Path, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Serve operator_app with ``env``, answer one request, send SIGTERM; the exit status and the output."""
    port = svc.free_port()
    command = [str(app_python.parent / "uvicorn"), "operator_app:app", "--app-dir",
               str(svc.ROOT / "tests" / "integration" / "apps"), "--host", "127.0.0.1", "--port", str(port)]
    with svc.launch(command, port, env, cwd=cwd) as service:
        assert service.get("/work/1").status_code == 200
        code = service.terminate(timeout_s=30)
    return code, service.output() + service.errors()


def test_sigterm_ends_the_injected_app_as_it_ends_the_bare_one(injected: Injected) -> None:
    """The exit status on SIGTERM is uvicorn's own, with or without the injection.

    uvicorn (0.30 and later) re-raises a captured SIGTERM once its graceful shutdown is over, so the
    process ends by the signal (-15 here, 143 as a pod's exit code) whether or not qm-otel is loaded;
    qm-otel's SIGTERM handler flushes and then lets the signal end the process as before.
    """
    base = {"PATH": f"{injected.app_python.parent}:/usr/bin:/bin", "HOME": str(injected.target.parent),
            "LANG": "C.UTF-8"}
    bare_status, bare_output = _served_then_stopped(injected.app_python, base, injected.target.parent)
    with OtlpReceiver().start() as receiver:
        env = operator_environment(str(injected.target), receiver.endpoint) | base
        status, output = _served_then_stopped(injected.app_python, env, injected.target.parent)
        spans, _, _ = receiver.snapshot()
    assert "qm_otel" not in bare_output
    assert any(s.name == "GET /work/{n}" for s in spans), "the injected app was not instrumented"
    assert status == bare_status == -signal.SIGTERM, (status, bare_status, output[-3000:])
    for text in (bare_output, output):
        assert "Finished server process" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
