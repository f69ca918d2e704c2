"""The import-linter contracts (pyproject.toml, run by scripts/test) are not trivially kept.

Every module of the product sits in a layer, and each contract reports a deliberate violation
of its own rule, made in a copy of the tree: a contract that could only pass would be a
defect, not a gate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("autoscaler", "policies")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"]
CONTRACTS = {c["id"]: c for c in CONFIG["contracts"]}

# contract id, file of the copy, the import appended to it (each breaks only its own rule)
VIOLATIONS = [
    ("layers", "autoscaler/model.py", "autoscaler.cli"),  # the bottom imports the top
    ("layers", "autoscaler/telemetry.py", "autoscaler.sources"),  # sibling adapters
    ("layers", "policies/base.py", "autoscaler.config"),  # the core imports the config
    ("no-actuator-internals", "autoscaler/replay/backtest.py", "autoscaler.actuators.swarm"),
    ("pure-core", "autoscaler/decide.py", "socket"),
    ("pure-core", "policies/threshold.py", "requests"),
]


def modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def layer_members() -> list[str]:
    members = []
    for layer in CONTRACTS["layers"]["layers"]:
        members += layer.replace("|", " ").replace(":", " ").split()
    return members


def test_every_module_is_in_a_layer() -> None:
    members = layer_members()
    outside = [m for m in modules() if m != "autoscaler"
               and not any(m == x or m.startswith(x + ".") for x in members)]
    assert outside == [], "add these modules to a layer in pyproject.toml [tool.importlinter]"


def test_every_contract_has_a_violation_in_the_table() -> None:
    assert sorted({row[0] for row in VIOLATIONS}) == sorted(CONTRACTS)


def broken_sections(report: str) -> dict[str, str]:
    """The text lint-imports prints under each broken contract's name."""
    tail = report.split("Broken contracts", 1)[-1]
    sections: dict[str, str] = {}
    names = {c["name"]: cid for cid, c in CONTRACTS.items()}
    current = None
    for line in tail.splitlines():
        if line.strip() in names:
            current = names[line.strip()]
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


@pytest.fixture(scope="module")
def violated_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str]:
    """lint-imports on a copy of the tree with every row of VIOLATIONS made."""
    copy = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for _, file, module in VIOLATIONS:
        with (copy / file).open("a", encoding="utf-8") as f:
            f.write(f"\nimport {module}  # a deliberate violation\n")
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=copy, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(copy)}, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(("contract", "file", "module"), VIOLATIONS)
def test_the_contract_reports_a_deliberate_violation(
        violated_report: tuple[int, str], contract: str, file: str, module: str) -> None:
    code, report = violated_report
    assert code != 0, report
    importer = file.removesuffix(".py").replace("/", ".")
    section = broken_sections(report).get(contract, "")
    assert f"{importer} -> {module} " in section, report
