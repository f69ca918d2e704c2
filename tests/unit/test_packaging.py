"""Packaging as a Python user expects it: one version, declared dependencies, licence metadata.

The version has one source, `autoscaler/__init__.py` (pyproject.toml reads it); every other
place that must name it (the image label, the manifests' image tags, the CHANGELOG) is checked
against it here. The dependencies are checked against the imports of the shipped code.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from autoscaler import __version__

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
VERSION_RE = r"(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)"


def normalized(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalized(Requirement(r).name) for r in requirements}


# --------------------------------------------------------------------------- version


# (file, regex whose group 1 is a version that must be the project's)
VERSION_MENTIONS = [
    ("Dockerfile", r'org\.opencontainers\.image\.version="([^"]+)"'),
    ("Dockerfile", r"docker build -t stalwart-autoscaler:" + VERSION_RE),
    ("deploy/kubernetes/base/deployment.yaml", r"image: stalwart-autoscaler:" + VERSION_RE),
    ("deploy/swarm/stack.yml", r"stalwart-autoscaler:" + VERSION_RE),
    ("deploy/swarm/README.md", r"stalwart-autoscaler:" + VERSION_RE),
    ("docs/operations.md", r"stalwart-autoscaler:" + VERSION_RE),
    ("docs/operations.md", r"newTag: " + VERSION_RE),
    ("CHANGELOG.md", r"^## \[" + VERSION_RE + r"\]"),  # the newest released section
]


@pytest.mark.parametrize(("path", "pattern"), VERSION_MENTIONS,
                         ids=[f"{p}:{i}" for i, (p, _) in enumerate(VERSION_MENTIONS)])
def test_every_mention_of_the_version_is_the_projects(path: str, pattern: str) -> None:
    text = (REPO / path).read_text(encoding="utf-8")
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert found, f"{path}: nothing matches {pattern!r} (moved? update this table)"
    if path == "CHANGELOG.md":
        found = found[:1]
    assert set(found) == {__version__}, f"{path} names {sorted(set(found))}"


def test_pyproject_takes_the_version_from_the_package() -> None:
    assert "version" not in PROJECT
    assert PROJECT["dynamic"] == ["version"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "autoscaler.__version__"}
    assert importlib.metadata.version("stalwart-autoscaler") == __version__, \
        "the installed metadata is stale: reinstall the venv"


def test_version_flag_prints_the_version() -> None:
    done = subprocess.run([sys.executable, "-m", "autoscaler.cli", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"autoscaler {__version__}")


# --------------------------------------------------------------------------- licence


def test_license_is_an_spdx_expression_with_its_file() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")], \
        "a License classifier beside an SPDX license string is an error for setuptools >= 77"
    setuptools = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                  if Requirement(r).name == "setuptools"]
    assert setuptools and not setuptools[0].specifier.contains("76.9"), \
        "setuptools < 77 cannot read an SPDX license string"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    label = re.search(r'org\.opencontainers\.image\.licenses="([^"]+)"',
                      (REPO / "Dockerfile").read_text(encoding="utf-8"))
    assert label and label.group(1) == PROJECT["license"]


# --------------------------------------------------------------------------- dependencies


def third_party_imports(*packages: str) -> set[str]:
    """Top-level names of every module the shipped packages import, outside the stdlib and
    themselves (imports inside functions included: they are imported when used)."""
    names: set[str] = set()
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"autoscaler", "policies", "__future__"}


def test_every_imported_library_is_declared_and_plots_are_an_extra() -> None:
    runtime = requirement_names(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    plot = requirement_names(extras["plot"])
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(third_party_imports("autoscaler", "policies")):
        dists = {normalized(d) for d in distributions.get(module, [module])}
        if not dists & (runtime | plot):
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not declared: {undeclared}"
    assert {"requests", "urllib3"} <= runtime
    assert plot == {"matplotlib"} and not plot & runtime, "plots are the optional extra"
    assert "prometheus-api-client" not in runtime, "README, Dependencies: removed, and why"
    assert "stalwart-autoscaler[plot]" in extras["dev"], "the plotting tests need it in dev"


def test_the_image_is_checked_for_the_hosts_interpreter(tmp_path: Path) -> None:
    """A host whose Python is not the image's stops before building any wheel."""
    env = {**os.environ, "IMAGE_PYTHON": "2.7"}
    done = subprocess.run([str(REPO / "scripts" / "build-image"), "--wheels-only"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 1
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"the host's Python is {have}, the image's is 2.7" in done.stderr
    assert "pip wheel" not in done.stderr, "it stopped before building"


def test_the_wheel_ships_the_daemon_not_the_test_tooling() -> None:
    """The emulator (tools/) is test and demo tooling: setuptools' own discovery, with
    pyproject's settings, must leave it out and keep the replay package in."""
    from setuptools import find_packages

    found = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_packages(str(REPO), include=found["include"],
                                 exclude=found.get("exclude", ())))
    assert {"autoscaler", "autoscaler.replay", "autoscaler.actuators", "policies"} <= packages
    assert not {p for p in packages if p.split(".")[0] in ("tools", "tests", "bench")}
