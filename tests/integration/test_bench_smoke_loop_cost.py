"""Smoke run of the loop-cost benchmark: its real command, small (5 targets, one tick per mode),
with the report sent to a temporary file (BENCH_DOC, BENCH_JSON) instead of
docs/benchmarks.md. It checks that both modes are measured and reported with every signal
`ok`, never how fast anything was: figures belong to the full runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import daemon_env

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def published_section() -> str:
    """The loop-cost section of docs/benchmarks.md (other benchmarks may rewrite theirs
    meanwhile)."""
    text = (REPO / "docs" / "benchmarks.md").read_text()
    return text.split("<!-- loop-cost:begin -->", 1)[1].split("<!-- loop-cost:end -->", 1)[0]


def test_loop_cost_benchmark_measures_both_modes_with_ok_signals(tmp_path: Path) -> None:
    published = published_section()
    doc, figures = tmp_path / "benchmarks.md", tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.loop_cost", "--targets", "5", "--runs", "1",
         "--history", "10"],
        check=False, cwd=REPO, env=daemon_env(BENCH_DOC=str(doc), BENCH_JSON=str(figures)),
        capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    section, found = doc.read_text(), json.loads(figures.read_text())
    assert "<!-- loop-cost:begin -->" in section and "<!-- loop-cost:end -->" in section
    assert "Per-target queries (default):" in section
    assert "Grouped queries (`group_by_label: service`):" in section
    assert "every signal of every tick read `ok`; no target failed" in section
    per_target, = found["results"]
    grouped, = found["grouped"]
    # 5 targets x 3 policies, one query each; grouped: one query per policy
    assert (per_target["queries"], grouped["queries"]) == (15, 3)
    for run in (per_target, grouped):
        assert run["n"] == 5 and run["errors"] == 0, run
        assert run["states"] == {"ok": 15}, run
        assert len(run["tick"]) == 1 and run["tick"][0] > 0, run
    assert published_section() == published
