"""Smoke runs of the benchmarks that need the live stack: reaction time on the real Swarm and
Kubernetes, and the daemon's footprint. Each runs its real command, small, with its report sent
to a temporary file (BENCH_DOC, BENCH_JSON) instead of docs/benchmarks.md. They check that the
benchmark measures and reports, never how fast anything was: figures belong to the full runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import daemon_env
from tests.support.realenv import RealEnv, default_env_path

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def run_bench(module: str, args: list[str], tmp_path: Path,
              realenv: RealEnv) -> tuple[str, dict[str, Any]]:
    """Run `python -m bench.<module>`; return the section it wrote and its JSON figures."""
    doc, figures = tmp_path / "benchmarks.md", tmp_path / "figures.json"
    # The environment the tests use (AUTOSCALER_TESTENV may point at another checkout's).
    env = daemon_env(BENCH_DOC=str(doc), BENCH_JSON=str(figures),
                     DOCKER_HOST=realenv.docker_host, KUBECONFIG=str(realenv.kubeconfig),
                     AUTOSCALER_TESTENV=str(default_env_path()))
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], check=False,
                          cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return doc.read_text(), json.loads(figures.read_text())


def test_reaction_benchmark_measures_every_trial_on_both_backends(
        realenv: RealEnv, tmp_path: Path) -> None:
    published = (REPO / "docs" / "benchmarks.md").read_text()
    section, figures = run_bench("reaction", ["--trials", "2"], tmp_path, realenv)
    assert "<!-- reaction:begin -->" in section and "<!-- reaction:end -->" in section
    for backend in ("swarm", "kubernetes"):
        trials = figures[backend]
        assert len(trials) == 2, backend
        for trial in trials:
            parts = (trial["scrape_wait"], trial["tick_wait"], trial["tick_to_seen"])
            # step -> first scrape holding it -> the tick that wrote -> the write seen:
            # each part measured forwards in time, none missing
            assert all(math.isfinite(x) and x >= 0 for x in parts), trial
            assert trial["reaction"] > 0, trial
        assert f"| {backend} | 2 |" in section, section
    assert (REPO / "docs" / "benchmarks.md").read_text() == published


def test_footprint_benchmark_reports_memory_and_cpu_with_ok_signals(
        realenv: RealEnv, tmp_path: Path) -> None:
    section, figures = run_bench(
        "footprint", ["--minutes", "0.25", "--runs", "1", "--large", "20", "--cpu-targets", "5",
                      "--interval", "2", "--large-interval", "2", "--ticks", "3",
                      "--history", "10"], tmp_path, realenv)
    assert "<!-- footprint:begin -->" in section and "<!-- footprint:end -->" in section
    assert "RSS idle, 1 Swarm target (MB)" in section
    assert "RSS, 20 targets (MB)" in section
    # resident memory is a real reading of a live process: a Python daemon is megabytes
    assert all(mb > 5 for mb in figures["idle"] + figures["large"]), figures
    assert figures["cpu"]["ticks"] >= 1 and figures["cpu"]["cpu"] > 0, figures["cpu"]
    # every signal of the 20- and 5-target runs read ok (the first idle tick may find
    # no history yet, as the full run's report says)
    assert figures["errors"]["large"] == 0 and figures["errors"]["cpu"] == 0, figures["errors"]
