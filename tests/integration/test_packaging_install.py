"""Installing the project as a user would: a fresh venv, `pip install -v .`, then the plot extra.

The runtime install has no warning of the project's (the SPDX licence metadata used to warn
on every install) and no matplotlib or numpy; `pip install '.[plot]'` then draws a PNG. The
packages come from PyPI through pip's cache (the machine's ordinary pip set-up).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler import __version__

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "autoscaler", "policies")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Said by this machine's own pip configuration (an extra index whose folders do not exist),
# not by the project: the only warnings left out.
MACHINE_PIP_CONFIG = re.compile(r"^WARNING: Location '[^']+' is ignored")

pytestmark = pytest.mark.timeout(900)


def pip_env() -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE makes setuptools warn that byte-compiling is disabled: a
    # setting of the caller's shell, not of the project.
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd,
                          env=pip_env(), timeout=600, check=False)


def project_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if re.search(r"warn", line, re.IGNORECASE) and not MACHINE_PIP_CONFIG.match(line)]


def test_fresh_install_without_warnings_or_plots_then_the_plot_extra(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_ = venv / "bin"

    install = run(bin_ / "pip", "install", "-v", "--disable-pip-version-check", src, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    assert project_warnings(install.stdout + install.stderr) == []

    absent = run(bin_ / "pip", "show", "matplotlib", "numpy", cwd=tmp_path)
    assert absent.returncode == 1
    assert "not found: matplotlib, numpy" in absent.stderr
    version = run(bin_ / "autoscaler", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"autoscaler {__version__}"
    without = run(bin_ / "autoscaler", "simulate", "--trace", "slow-ramp", "--no-compare",
                  "--plot", "p.png", cwd=tmp_path)
    assert without.returncode == 1 and "Traceback" not in without.stderr
    assert "pip install 'stalwart-autoscaler[plot]'" in without.stderr

    plot = run(bin_ / "pip", "install", "--disable-pip-version-check", f"{src}[plot]",
               cwd=tmp_path)
    assert plot.returncode == 0, plot.stderr[-3000:]
    drawn = run(bin_ / "autoscaler", "simulate", "--trace", "slow-ramp", "--no-compare",
                "--plot", "p.png", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
