"""Smoke runs of the two benchmarks that need no live stack: decision-core speed and control
quality. Each runs its real command with the report sent to a temporary file (BENCH_DOC), so a
test run never rewrites docs/benchmarks.md. They check what is measured and reported, never
how fast: figures belong to the full runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTENDERS = ("profile", "hpa-cpu", "static", "reactive-oracle", "clairvoyant-oracle")

pytestmark = pytest.mark.timeout(600)


def run_bench(module: str, args: list[str], doc: Path) -> str:
    env = {**os.environ, "BENCH_DOC": str(doc)}
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], check=False,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return doc.read_text()


def test_speed_benchmark_times_the_week_and_the_help(tmp_path: Path) -> None:
    published = (REPO / "docs" / "benchmarks.md").read_text()
    section = run_bench("speed", ["--runs", "1"], tmp_path / "benchmarks.md")
    assert "<!-- speed:begin -->" in section and "<!-- speed:end -->" in section
    assert "The 7-day trace gives 40,316 evaluations at 15 s" in section
    for row in ("Stalwart profile: wall (s)", "Stalwart profile: CPU (s)",
                "hpa-cpu baseline: wall (s)", "`autoscaler --help` (s)"):
        assert f"| simulate diurnal-week, {row}" in section or f"| {row}" in section, row
    assert (REPO / "docs" / "benchmarks.md").read_text() == published


def test_quality_benchmark_covers_every_trace_and_contender(tmp_path: Path) -> None:
    extra = tmp_path / "step-up.csv"  # a trace given on the command line joins the bundled ones
    extra.write_text("t,demand\n" + "".join(
        f"{t},{5000 if t < 3600 else 45000}\n" for t in range(0, 7200, 60)))
    published = (REPO / "docs" / "benchmarks.md").read_text()
    # the first 3 h of each trace: every contender and every line, not the weeks' figures
    section = run_bench("quality", ["--hours", "3", str(extra)], tmp_path / "benchmarks.md")
    assert "first 3 h only" in section
    tables = {}
    for trace in ("diurnal-week", "newsletter-burst", "noisy-flat", "slow-ramp", "step-up",
                  "daily-digest", "hourly-job", "weekly-campaign"):
        assert f"### {trace}" in section, trace
        assert (tmp_path / "benchmarks" / f"quality-{trace}.png").stat().st_size > 1000
        tables[trace] = section.split(f"### {trace}", 1)[1].split("###", 1)[0]
        assert all(f"| {c} |" in tables[trace] for c in (*CONTENDERS, "guide", "guide-floor")), \
            (trace, tables[trace])
    assert "| step-up |" in section  # its line in the goals table
    # #10's lines: per period on the recurring traces (3 hourly periods in 3 h), the guide's
    # rules against the clairvoyant oracle there and on newsletter-burst
    assert "profile overload by period (3 periods)" in tables["hourly-job"]
    assert "it jitters by minutes, goal <= 15 s per burst" in tables["daily-digest"]
    assert "an exact schedule, goal 0 s" in tables["weekly-campaign"]
    for trace in ("daily-digest", "hourly-job", "weekly-campaign", "newsletter-burst"):
        assert "guide's rules " in tables[trace] and "x clairvoyant" in tables[trace], trace
    # 3 h of a 14-day trace say nothing of simulate's 14-day goal.
    assert "under 10 s: not judged: the trace was not run whole" in section
    assert (REPO / "docs" / "benchmarks.md").read_text() == published
