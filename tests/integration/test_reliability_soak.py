"""The soak command's smoke version: one minute, 10 dry-run targets, writing to a temporary
file. It checks that `scripts/reliability soak` runs the daemon, measures RSS, fds and threads
over time, writes its section and sees no error; the thresholds need the 30-minute run
(docs/reliability.md, "Soak")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from bench.reliability_doc import read_section
from tests.support.realenv import RealEnv, default_env_path

REPO = Path(__file__).resolve().parents[2]


def test_soak_smoke_measures_and_writes_its_section(realenv: RealEnv, tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("# R\n\n<!-- soak:begin -->\n(to be written)\n<!-- soak:end -->\n"
                   "<!-- other:begin -->\nkept\n<!-- other:end -->\n")
    figures_path = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    # The environment the tests use (AUTOSCALER_TESTENV may point at another checkout's).
    env.update(RELIABILITY_DOC=str(doc), SOAK_JSON=str(figures_path),
               AUTOSCALER_TESTENV=str(default_env_path()))
    done = subprocess.run(
        ["scripts/reliability", "soak", "--minutes", "1", "--targets", "10", "--warmup", "20"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    figures = json.loads(figures_path.read_text())
    section = read_section("soak", doc)
    assert section.startswith("## Soak") and "(to be written)" not in section
    assert read_section("other", doc) == "kept"
    assert figures["samples"] >= 6, "sampled every 5 s for a minute"
    assert figures["ticks_after_warmup"] > 0
    assert figures["rss_start"] > 0 and figures["fds_first"] > 0 and figures["threads_first"] > 0
    assert figures["errors_after_warmup"] == {"signals not ok": 0, "backend errors": 0,
                                              "ERROR log lines": 0}, done.stderr[-3000:]
    assert "| RSS start (after warm-up) / end / max (MB) |" in section
