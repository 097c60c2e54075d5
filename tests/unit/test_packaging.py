"""The package a user installs: a wheel built from this tree carries the license text and
true metadata, holds no tests, and, installed in a clean virtual environment, runs
``tasktrail demo``."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built as pip builds it (an isolated hatchling)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("tasktrail-*.whl")
    return built


def _metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(meta).decode())
        license_text = archive.read(
            next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        ).decode()
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    return names, fields, license_text


def test_the_wheel_carries_the_license_and_true_metadata(wheel: Path) -> None:
    """LICENSE (MIT) is in the wheel; metadata names the license, 3.13, POSIX, the URLs."""
    names, fields, license_text = _metadata(wheel)
    assert license_text == (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert fields["License-Expression"] == ["MIT"]
    classifiers = fields["Classifier"]
    assert "Programming Language :: Python :: 3.13" in classifiers
    assert "Operating System :: POSIX" in classifiers
    urls = dict(url.split(", ", 1) for url in fields["Project-URL"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert urls == project["urls"]
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]
    assert "tasktrail/py.typed" in names


def test_mkdocs_site_url_and_repository_match_the_package(wheel: Path) -> None:
    """The docs' site_url and repository link are the package's Documentation and
    Repository URLs."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    config = (ROOT / "mkdocs.yml").read_text()
    assert f"site_url: {urls['Documentation']}" in config
    assert f"repo_url: {urls['Repository']}" in config


def test_crash_points_are_unarmed_unless_a_test_arms_them() -> None:
    """The test hooks that ship in the package do nothing in a normal process: no crash
    point is armed and no hook is set (TASKTRAIL_CRASH_AT is for the tests only)."""
    env = {k: v for k, v in os.environ.items() if k != "TASKTRAIL_CRASH_AT"}
    done = subprocess.run(
        [sys.executable, "-c", "import tasktrail, tasktrail._crashpoints as c; "
         "print(c._armed, c._hook)"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["None", "None"]
    docs = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    assert "`TASKTRAIL_CRASH_AT` | tasktrail, **tests only**" in docs


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    """In a clean virtual environment, `pip install` of the wheel gives a working
    `tasktrail demo`, and the license text lies beside the installed package."""
    home = tmp_path / "venv"
    venv.create(home, with_pip=False)  # this pip installs into it (faster than ensurepip)
    python = home / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    demo = subprocess.run(
        [home / "bin" / "tasktrail", "demo", "--keep", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "verified" in demo.stdout
    assert "acknowledged events missing after the crash: 0" in demo.stdout
    found = subprocess.run(
        [python, "-c", "import importlib.metadata as m; "
         "print(m.distribution('tasktrail').read_text('licenses/LICENSE'))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert found.stdout.startswith("MIT License")
