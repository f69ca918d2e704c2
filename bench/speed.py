"""Speed of the decision core: `simulate` over a 7-day trace, and `autoscaler --help`.

Targets (issue: the decision core): a 7-day trace at 15 s steps (40,320 evaluations) in
under 5 s; `--help` in under 0.3 s. Run: `scripts/bench speed [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from autoscaler.cli import bundled_config_path
from autoscaler.config import load_config
from autoscaler.replay.simulate import run_simulation
from autoscaler.trace import load_trace, resolve_trace
from bench.report import machine, spread, write_section


def time_simulate(runs: int, baseline: str | None) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of `runs` simulations of one contender alone (no comparison
    contenders), the config and trace loaded before the clock starts."""
    settings = load_config(bundled_config_path())
    trace = load_trace(resolve_trace("diurnal-week"))
    walls, cpus, evaluations = [], [], 0
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        [result] = run_simulation(settings, settings.targets[0], trace,
                                  baseline=baseline)  # type: ignore[arg-type]
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        evaluations = len(result.timeline)
    return walls, cpus, evaluations


def time_help(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "autoscaler.cli", "--help"], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    profile, profile_cpu, evaluations = time_simulate(args.runs, None)
    hpa, hpa_cpu, _ = time_simulate(args.runs, "hpa-cpu")
    helps = time_help(max(args.runs, 10))
    rows = [
        ("simulate diurnal-week, Stalwart profile: wall (s)", spread(profile, "{:.2f}"), "< 5"),
        ("simulate diurnal-week, Stalwart profile: CPU (s)", spread(profile_cpu, "{:.2f}"), ""),
        ("simulate diurnal-week, hpa-cpu baseline: wall (s)", spread(hpa, "{:.2f}"), "< 5"),
        ("simulate diurnal-week, hpa-cpu baseline: CPU (s)", spread(hpa_cpu, "{:.2f}"), ""),
        ("`autoscaler --help` (s)", spread(helps), "< 0.3"),
    ]
    body = [
        "## Decision core speed",
        "",
        f"Machine: {machine()}. Command: `scripts/bench speed --runs {args.runs}`; "
        f"load average {load:.1f} when it started.",
        f"The 7-day trace gives {evaluations:,} evaluations at 15 s (policies, behavior,",
        "cooldowns, guards and the plant model each time). Timed: `run_simulation` of the",
        "bundled example config's first target (smtp, preset stalwart-smtp) for one contender",
        "alone, with the config and trace already loaded and no plot or JSON written;",
        "`autoscaler simulate` also runs the other two contenders for its comparison table.",
        "CPU is the process's own CPU time, which other work on the machine inflates less",
        "than the wall time.",
        "",
        "| what | median (min-max) | goal |",
        "|---|---|---|",
        *[f"| {w} | {v} | {g} |" for w, v, g in rows],
        "",
        "`--help` imports only argparse: every subcommand imports its own dependencies, and",
        "the time is mostly the interpreter's own start-up.",
    ]
    text = "\n".join(body)
    print(text)
    write_section("speed", text)


if __name__ == "__main__":
    main()
