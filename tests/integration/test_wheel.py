"""The built wheel, installed into a fresh virtual environment, run from an empty directory (issue 13, item 9)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.support import service as svc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this checkout; its dependencies come from the test venv."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(svc.ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = (work / "dist").glob("qm_otel-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (not qm-otel: the test venv's editable install is not on this path)
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def run(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = svc.base_env("http://127.0.0.1:9")
    env.pop("PYTHONPATH")  # nothing from the checkout
    for key in ("OTEL_SERVICE_NAME", "QM_OTEL_LOG_FORMAT", "QM_OTEL_SERVICE_VERSION", "QM_OTEL_ENVIRONMENT"):
        env.pop(key)
    env["PATH"] = f"{installed / 'bin'}:{env['PATH']}"
    return subprocess.run([str(installed / "bin" / "qm-otel"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_package_is_the_wheels_not_the_checkouts(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import qm_otel; print(qm_otel.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed))


def test_the_demo_runs_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "request traces drawn" in result.stdout
    assert "Traceback" not in result.stderr


def test_commands_that_need_a_checkout_say_so_in_one_line(installed: Path, tmp_path: Path) -> None:
    for args in (("render",), ("render", "--check")):
        result = run(installed, *args, cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("qm-otel render works in a qm-otel checkout")


def test_commands_against_a_stack_that_is_not_there_fail_cleanly(installed: Path, tmp_path: Path) -> None:
    check = run(installed, "check", "--timeout", "0.2", cwd=tmp_path)
    assert check.returncode == 1
    assert "FAIL" in check.stdout
    assert "Traceback" not in check.stderr
    logs = run(installed, "logs", "order-1001", "--loki", "http://127.0.0.1:9", "--timeout", "1", cwd=tmp_path)
    assert logs.returncode == 2
    assert logs.stderr.startswith("qm-otel logs: ")
    assert len(logs.stderr.strip().splitlines()) == 1
