"""Third-party policies through the `autoscaler.policies` entry point group: a working plugin
is loaded and used, a broken one is a clear error (check-config exits 2), never a traceback.

Each case installs a tiny distribution (a module and its .dist-info with entry_points.txt)
into a temporary directory put on PYTHONPATH of an `autoscaler` subprocess: the plugin is
found the way an installed package is, and this process's registry stays untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoscaler.cli import EXIT_BAD_INPUT, EXIT_OK
from autoscaler.registry import ENTRY_POINT_GROUP

DOUBLER = '''
    from typing import Literal

    from autoscaler.model import PolicyContext, Recommendation, Signal
    from policies import Policy


    class Doubler(Policy):
        """Asks for twice the current size while the signal is above `above`."""

        type: Literal["doubler"] = "doubler"
        above: float = 1.0

        def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
            if (signal.latest or 0.0) > self.above:
                return Recommendation(2 * ctx.current, "doubled")
            return Recommendation(ctx.current, "held")
'''

CONFIG = """
targets:
  - name: smtp
    backend: swarm
    service: smtp
    max_replicas: 10
    policies:
      - {type: doubler, query: 'sum(up)', above: 0.5}
"""


def install(site: Path, module: str, source: str, entry: str) -> None:
    """A distribution `module` 0.1 with one `autoscaler.policies` entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry}\n")


def run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": path}, cwd=site, check=False)


def test_a_third_party_policy_is_loaded_through_its_entry_point(tmp_path: Path) -> None:
    install(tmp_path, "doubler_plugin", DOUBLER, "doubler = doubler_plugin:Doubler")
    (tmp_path / "autoscaler.yaml").write_text(CONFIG)
    checked = run(tmp_path, "-m", "autoscaler.cli", "check-config", "autoscaler.yaml")
    assert checked.returncode == EXIT_OK, checked.stderr
    assert "doubler" in checked.stdout
    used = run(tmp_path, "-c", textwrap.dedent("""
        from autoscaler.config import load_config
        from autoscaler.model import PolicyContext, Sample, Signal
        [policy] = load_config("autoscaler.yaml").targets[0].effective_policies()
        rec = policy.recommend(Signal.ok((Sample(0.0, 1.0),)), PolicyContext(current=3))
        print(type(policy).__module__, rec.replicas, rec.reason)
    """))
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["doubler_plugin", "6", "doubled"]


@pytest.mark.parametrize(("source", "entry", "message"), [
    pytest.param("raise ImportError('needs numpy 3')\n", "doubler = broken_plugin:Doubler",
                 "policy plugin 'doubler' (broken_plugin:Doubler) failed to load: needs numpy 3",
                 id="import-fails"),
    pytest.param("Doubler = 42\n", "doubler = broken_plugin:Doubler",
                 "policy plugin 'doubler' (broken_plugin:Doubler) is not a Policy subclass",
                 id="not-a-policy"),
])
def test_a_broken_plugin_is_a_clear_error_not_a_traceback(tmp_path: Path, source: str,
                                                          entry: str, message: str) -> None:
    install(tmp_path, "broken_plugin", source, entry)
    (tmp_path / "autoscaler.yaml").write_text(CONFIG)
    checked = run(tmp_path, "-m", "autoscaler.cli", "check-config", "autoscaler.yaml")
    assert checked.returncode == EXIT_BAD_INPUT, (checked.stdout, checked.stderr)
    assert message in checked.stderr
    assert "Traceback" not in checked.stderr


def test_importing_the_config_loads_no_plugin(tmp_path: Path) -> None:
    """Plugins load at the first config load: importing the CLI or the config models never
    runs a plugin's code."""
    install(tmp_path, "broken_plugin", "raise SystemExit('plugin code ran')\n",
            "doubler = broken_plugin:Doubler")
    imported = run(tmp_path, "-c", "import autoscaler.cli, autoscaler.config, autoscaler.loop")
    assert imported.returncode == 0, imported.stderr
