"""`autoscaler backtest` against the real Prometheus holding the emulator's history."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.e2e import inflow_capacity, prom_value, registered
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until
from tools.emulator import Emulator, FixedInstances


def test_backtest_replays_a_recorded_demand_step(realenv: RealEnv, tmp_path: Path) -> None:
    with Emulator(FixedInstances(2), demand=5000, startup_delay=0, poll=0.5) as emulator, \
            registered(realenv, emulator) as cluster:
        policy = inflow_capacity(cluster)
        wait_until("low inflow recorded",
                   lambda: (prom_value(realenv.prometheus_url, policy["query"]) or 0) > 1000, 60)
        start = time.time()
        time.sleep(12)
        emulator.set_demand(40000)
        step_at = time.time()
        wait_until("high inflow recorded",
                   lambda: (prom_value(realenv.prometheus_url, policy["query"]) or 0) > 30000, 60)
        time.sleep(3)
        end = time.time()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "evaluation_interval": "1s",
        "prometheus": {"url": realenv.prometheus_url, "scrape_interval": "1s"},
        "targets": [{"name": "smtp", "backend": "swarm", "service": "unused",
                     "min_replicas": 1, "max_replicas": 10,
                     "cooldown": {"up": "0s", "down": "0s"}, "policies": [policy]}],
    }))
    out, plot = tmp_path / "b.json", tmp_path / "b.png"
    proc = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "backtest", "--config", str(config),
         "--start", f"{start:.3f}", "--end", f"{end:.3f}", "--out", str(out),
         "--plot", str(plot)], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    before = [r["replicas"] for r in report["timeline"] if r["t"] < step_at - 1]
    after = [r["replicas"] for r in report["timeline"] if r["t"] > end - 2]
    assert before and max(before) <= 2  # ceil(0.5 x 1.5) = 1, noise allows 2
    assert after and min(after) >= 5  # ceil(4 x 1.5) = 6, less the rate's noise
    assert report["summary"]["scale_events"] >= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_with_prometheus_down_says_so_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "1s"},
        "targets": [{"name": "smtp", "backend": "swarm", "service": "s", "max_replicas": 3,
                     "policies": [{"type": "capacity", "query": "x"}]}],
    }))
    proc = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "backtest", "--config", str(config),
         "--start=-2m"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "gaps in policy/capacity" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_backtest_rejects_bad_times(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "targets": [{"name": "smtp", "backend": "swarm", "service": "s", "max_replicas": 3,
                     "policies": [{"type": "capacity", "query": "x"}]}]}))
    for start, end in (("yesterday", "now"), ("-1m", "-2m")):
        proc = subprocess.run(
            [sys.executable, "-m", "autoscaler.cli", "backtest", "--config", str(config),
             f"--start={start}", f"--end={end}"],
            check=False, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("autoscaler: ")
