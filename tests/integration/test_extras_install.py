"""Every extra installs from the index with plain ``pip install 'qm-otel[…]'`` in a new virtualenv (issue 22, item 4).

No constraints file and the pip the virtualenv ships (23.2.1 with Python 3.11.7; the test records it): the
distribution's own metadata pins the OpenTelemetry release set it is tested with, so that pip has
one answer to find instead of a search it gives up on (``ResolutionImpossible`` when a contrib patch
release covers only some instrumentations). The wheel is built from this checkout; everything else
comes from the index as a user's pip sees it (pip's own configuration and download cache included).

The installs run side by side, from copies of one new virtualenv, and share pip's cache. What they cost
is CPU: pip 23.2.1 checks each of some 40,000 files the index pages list against the platform's tags,
about 15 s of CPU an install here, 140 to 155 s for all eight with the wheel and the virtualenv: 91 s
measured on two cores beside other test runs (load 2 to 3), 240 s under a load of 6.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import venv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import service as svc

pytestmark = pytest.mark.integration

#: each extra a user installs (docs/install.md), alone and in a combination
EXTRAS = ("grpc", "db", "redis", "requests", "celery", "libraries", "cli", "cli,db")
#: installs at a time: each waits on the network and resolves and unpacks on a core (2 here)
_WORKERS = 3
_PYPROJECT = tomllib.loads((svc.ROOT / "pyproject.toml").read_text())["project"]
_OTEL = re.compile(r"opentelemetry-")


def _requirements(extras: str) -> list[Requirement]:
    """qm-otel's requirements with ``extras``, its own extras (``qm-otel[db,…]``) expanded."""
    wanted = [e.strip() for e in extras.split(",") if e.strip()]
    requirements = [Requirement(text) for text in _PYPROJECT["dependencies"]]
    seen: set[str] = set()
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in _PYPROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name == _PYPROJECT["name"]:
                wanted.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def _pins(extras: str) -> dict[str, str]:
    """The OpenTelemetry distributions qm-otel pins with ``extras``, and their versions."""
    return {r.name: str(r.specifier)[2:] for r in _requirements(extras) if _OTEL.match(r.name)}


def test_the_release_set_is_pinned_once_in_the_metadata() -> None:
    """Every OpenTelemetry requirement is one exact version of one of two release lines; no constraints file beside."""
    otel = [r for r in _requirements(",".join(_PYPROJECT["optional-dependencies"])) if _OTEL.match(r.name)]
    loose = [str(r) for r in otel if len(r.specifier) != 1 or next(iter(r.specifier)).operator != "=="]
    assert loose == [], "pin the OpenTelemetry release set exactly (==)"
    lines = {"1.x (SDK)": {str(r.specifier)[2:] for r in otel if str(r.specifier).startswith("==1.")},
             "0.x (contrib)": {str(r.specifier)[2:] for r in otel if str(r.specifier).startswith("==0.")}}
    assert all(len(versions) == 1 for versions in lines.values()), lines
    assert not (svc.ROOT / "constraints.txt").exists(), "the metadata is the one place the release set is pinned"


#: run in an installed venv, from an empty directory: qm-otel imports; every distribution and its version
_LIST = ("import importlib.metadata as m, json, re, qm_otel; print(json.dumps("
         "{re.sub('[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}))")


@dataclass(frozen=True)
class Install:
    """What ``pip install '<wheel>[extras]'`` did in a new virtualenv."""

    extras: str
    returncode: int
    output: str
    seconds: float
    pip: str
    installed: dict[str, str]
    check: str


def _install(wheel: Path, work: Path, extras: str) -> Install:
    env_dir = work / f"venv-{extras.replace(',', '-')}"
    shutil.copytree(work / "venv", env_dir, symlinks=True)  # a new virtualenv, as made below
    python = str(env_dir / "bin" / "python")
    environ = {k: v for k, v in os.environ.items() if k not in {"PIP_CONSTRAINT", "PIP_REQUIREMENT", "PYTHONPATH"}}
    pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=True,
                         env=environ).stdout.split()[1]
    started = time.monotonic()
    # --no-compile: the .pyc files cost CPU on 2 cores and change nothing of what is resolved
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--no-compile", f"{wheel}[{extras}]"],
                          capture_output=True, text=True, timeout=600, check=False, env=environ)
    seconds = time.monotonic() - started
    installed: dict[str, str] = {}
    check = ""
    if done.returncode == 0:
        listing = subprocess.run([python, "-c", _LIST], capture_output=True, text=True, check=True, env=environ,
                                 cwd=work)
        installed = json.loads(listing.stdout)
        check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, check=False,
                               env=environ).stdout
    output = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                       if "is ignored: it is neither a file nor a directory" not in line)
    return Install(extras, done.returncode, output, seconds, pip, installed, check)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Install]:
    """Each extra installed from the index into its own new virtualenv, :data:`_WORKERS` at a time."""
    work = tmp_path_factory.mktemp("extras")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(svc.ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = (work / "dist").glob("qm_otel-*.whl")
    # one new virtualenv with the pip this Python ships (never upgraded here), copied for each install:
    # making each with ensurepip costs 5 s of CPU apiece
    venv.create(work / "venv", with_pip=True)
    # the largest sets first: the smaller ones then find most of their downloads in the cache
    order = sorted(EXTRAS, key=lambda extras: -len(_requirements(extras)))
    with ThreadPoolExecutor(_WORKERS) as pool:
        results = {result.extras: result for result in pool.map(lambda e: _install(wheel, work, e), order)}
    total = time.monotonic() - started
    print(f"\nextras installed from the index with pip {results[EXTRAS[0]].pip}, {_WORKERS} at a time, "
          f"{total:.0f} s in all (wheel build and venvs included):")
    for extras in EXTRAS:
        print(f"  qm-otel[{extras}]: {results[extras].seconds:.1f} s, exit {results[extras].returncode}")
    return results


@pytest.mark.parametrize("extras", EXTRAS)
def test_each_extra_installs_the_pinned_set_without_a_constraints_file(installs: dict[str, Install],
                                                                       extras: str) -> None:
    result = installs[extras]
    assert result.returncode == 0, f"pip install 'qm-otel[{extras}]' with pip {result.pip}:\n{result.output}"
    assert result.installed.get("qm-otel"), "qm-otel itself"
    pins = _pins(extras)
    assert {name: result.installed.get(name) for name in pins} == pins
    # one release set throughout, the packages the pins bring along included
    otel = {name: v for name, v in result.installed.items() if _OTEL.match(name)}
    assert {v for v in otel.values() if v.startswith("1.")} == {pins["opentelemetry-sdk"]}, otel
    assert {v for v in otel.values() if v.startswith("0.")} == {pins["opentelemetry-instrumentation"]}, otel
    assert "No broken requirements found." in result.check, result.check
