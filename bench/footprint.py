"""Footprint of a real `autoscaler run` process: resident memory idle with one Swarm target, and
at 1,000 dry-run targets; CPU per tick at 100 targets and a 15 s interval.

Run: `scripts/bench footprint [--minutes 5] [--runs 3]` (needs `scripts/testenv up`: a real
dockerd in swarm mode). The policies read the loop-cost exporter through a Prometheus of the
benchmark's own (`bench._stack`); every target is a dry-run Swarm target. Swarm services for
1,000 targets would be 1,000 real containers on 2 cores, so every target points at ONE real
service (created for the run, 1 busybox task): the targets read it through the Docker API at
every tick (one service list and one task list per tick, shared by all of them), but nothing
is ever written. The CPU run uses the daemon's defaults (see DEFAULTS). Memory: VmRSS of
the process after each tick (the first two ticks left out); CPU: utime + stime from
/proc/PID/stat over the measured minutes, divided by the ticks run, while /metrics is scraped
every 15 s as a Prometheus would.
Writes the "footprint" section of docs/benchmarks.md.
Goals (benchmark issue): idle <= 70 MB, <= 150 MB at 1,000 targets, < 5 % of one core at
100 targets and a 15 s interval.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from bench._stack import (
    HISTORY,
    REPO,
    SCRAPE_INTERVAL,
    BenchStack,
    cpu_seconds,
    free_port,
    loadavg,
    stop_process,
    swarm_service,
    synthetic_target,
    vmrss_mb,
    write_json,
)
from bench.report import machine, spread, write_section

IDLE_MB, LARGE_MB, CPU_PERCENT = 70.0, 150.0, 5.0
LARGE_INTERVAL = 45.0  # longer than a 1,000-target tick here (about 32 s): none is cut short
METRICS_EVERY = 15.0  # a Prometheus scraping the daemon's /metrics at the default interval
_TICKS = re.compile(r"^autoscaler_ticks_total (\S+)$", re.M)
_TICK_SUM = re.compile(r"^autoscaler_tick_duration_seconds_sum (\S+)$", re.M)
_ERRORS = re.compile(r'^autoscaler_query_errors_total\{[^}]*\} (\S+)$', re.M)


class Daemon:
    """`autoscaler run --config FILE` in a subprocess; its log goes to a file."""

    def __init__(self, workdir: Path, config: dict[str, Any], docker_host: str) -> None:
        self.port = free_port()
        config = {**config, "listen": f"127.0.0.1:{self.port}"}
        self.config_path = workdir / f"config-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / f"daemon-{self.port}.log"
        env = {**os.environ, "DOCKER_HOST": docker_host}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autoscaler.cli", "run", "--config",
                 str(self.config_path)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.metrics_text = ""
        self._ticks, self._since = 0, -1.0

    def metrics(self) -> str:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon exited ({self.proc.returncode}):\n{tail}")
        try:
            response = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30)
            self.metrics_text = response.text
        except requests.RequestException:
            self.metrics_text = ""
        return self.metrics_text

    def ticks(self) -> int:
        found = _TICKS.search(self.metrics())
        return int(float(found.group(1))) if found else 0

    def since_last_tick(self) -> float | None:
        """From /healthz (cheap: /metrics at 1,000 targets is a big page, and polling it
        would load the process being measured)."""
        if self.proc.poll() is not None:
            self.metrics()  # raises with the log's tail
        try:
            body = requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=10).json()
            return float(body["seconds_since_last_tick"])
        except (requests.RequestException, KeyError, ValueError, TypeError):
            return None

    def wait_ticks(self, n: int, timeout: float) -> int:
        """Until the daemon has run `n` ticks since it started, counted on /healthz (only
        while this polls it, every 0.2 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            since = self.since_last_tick()
            if since is not None:
                if 0 <= since < self._since:  # the clock went back: a tick ended
                    self._ticks += 1
                self._since = since
            if self._ticks >= n:
                return self._ticks
            time.sleep(0.2)
        raise RuntimeError(f"the daemon ran no {n} ticks within {timeout:g}s")

    def wait_tick_end(self, timeout: float) -> None:
        """Until a tick has just ended (between two ticks, the process is idle)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            since = self.since_last_tick()
            if since is not None and since < 0.3:
                return
            time.sleep(0.1)
        raise RuntimeError(f"no tick ended within {timeout:g}s")

    def mean_tick_seconds(self) -> float:
        total, ticks = _TICK_SUM.search(self.metrics_text), _TICKS.search(self.metrics_text)
        if not total or not ticks or float(ticks.group(1)) == 0:
            return float("nan")
        return float(total.group(1)) / float(ticks.group(1))

    def query_errors(self) -> int:
        return int(sum(float(v) for v in _ERRORS.findall(self.metrics_text)))

    def stop(self) -> None:
        stop_process(self.proc)


DEFAULTS = ("the daemon's defaults: `max_concurrent_queries: 8`, `timeout: 5s`, no "
            "`group_by_label` (one query per policy and target), INFO log level; set are only "
            "`url`, `scrape_interval` (2 s, the benchmark Prometheus') and "
            "`evaluation_interval`")


def config_for(url: str, targets: int, service: str, interval: float,
               timeout: str | None = "10s") -> dict[str, Any]:
    """The daemon's config; `timeout=None` keeps the default query timeout (5 s)."""
    prometheus = {"url": url, "scrape_interval": f"{SCRAPE_INTERVAL:g}s"}
    if timeout is not None:
        prometheus["timeout"] = timeout
    return {
        "evaluation_interval": f"{interval:g}s",
        "prometheus": prometheus,
        "targets": [synthetic_target(i, service=service) for i in range(targets)],
    }


def status_cost(docker_host: str, service: str, calls: int = 50) -> float:
    """Client CPU (ms) of the tick's shared Swarm read (service list + task list, as the
    daemon does once per tick for all its Swarm targets), measured in this process."""
    import docker

    from autoscaler.actuators.swarm import ServiceDirectory, SwarmActuator

    client = docker.DockerClient(base_url=docker_host, timeout=60, version="auto")
    try:
        directory = ServiceDirectory(client)
        first, _ = SwarmActuator(client, service, directory), SwarmActuator(client, service,
                                                                            directory)
        for _ in range(5):
            directory.begin_tick()
            first.status()
        cpu0 = time.process_time()
        for _ in range(calls):
            directory.begin_tick()
            first.status()
        return (time.process_time() - cpu0) / calls * 1000
    finally:
        client.close()


IMPORT_PROBE = """
import json
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024 / 1e6
steps = [('interpreter', rss())]
import requests
steps.append(('requests (ssl, urllib3)', rss()))
import autoscaler.config
steps.append(('pydantic + config + policies', rss()))
import autoscaler.loop, autoscaler.sources.prometheus
steps.append(('loop + Prometheus source', rss()))
import autoscaler.actuators.swarm
steps.append(('Docker SDK', rss()))
import apscheduler.schedulers.background, autoscaler.cli, autoscaler.telemetry
steps.append(('APScheduler, CLI, telemetry', rss()))
print(json.dumps(steps))
"""


def import_costs() -> list[tuple[str, float]]:
    """RSS after each group of imports `autoscaler run` makes, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return [(name, float(mb)) for name, mb in json.loads(out)]


def memory_run(workdir: Path, config: dict[str, Any], docker_host: str, ticks: int,
               timeout: float) -> tuple[list[float], float, int]:
    """VmRSS after each tick from the 3rd to the `ticks`-th; mean tick s; query errors."""
    daemon = Daemon(workdir, config, docker_host)
    samples: list[float] = []
    try:
        seen = daemon.wait_ticks(2, timeout)
        while seen < ticks:
            seen = daemon.wait_ticks(seen + 1, timeout)
            samples.append(vmrss_mb(daemon.proc.pid))
        daemon.metrics()
        return samples, daemon.mean_tick_seconds(), daemon.query_errors()
    finally:
        daemon.stop()


def cpu_run(workdir: Path, config: dict[str, Any], docker_host: str, interval: float,
            minutes: float) -> dict[str, Any]:
    """Process CPU per tick over `minutes`, split into windows of about a minute."""
    daemon = Daemon(workdir, config, docker_host)
    try:
        daemon.wait_ticks(2, 10 * interval + 60)
        start_ticks = daemon.ticks()
        t0, c0 = time.monotonic(), cpu_seconds(daemon.proc.pid)
        end = t0 + minutes * 60
        window = max(interval, min(60.0, minutes * 60 / 3))
        per_tick, percent, rss = [], [], []
        wt, wc, wticks = t0, c0, start_ticks
        while time.monotonic() < end:
            time.sleep(min(METRICS_EVERY, max(0.0, end - time.monotonic())))
            ticks = daemon.ticks()
            now, cpu = time.monotonic(), cpu_seconds(daemon.proc.pid)
            rss.append(vmrss_mb(daemon.proc.pid))
            if now - wt >= window - 1 and ticks > wticks:
                per_tick.append((cpu - wc) / (ticks - wticks))
                percent.append((cpu - wc) / (now - wt) * 100)
                wt, wc, wticks = now, cpu, ticks
        total_ticks = daemon.ticks() - start_ticks
        total_cpu = cpu_seconds(daemon.proc.pid) - c0
        wall = time.monotonic() - t0
        mean_tick, errors = daemon.mean_tick_seconds(), daemon.query_errors()
        # What one /metrics scrape costs the daemon: right after a tick, between two ticks.
        daemon.wait_tick_end(10 * interval + 60)
        scrape_ms, size = [], 0
        for _ in range(3):
            before = cpu_seconds(daemon.proc.pid)
            size = len(daemon.metrics())
            scrape_ms.append((cpu_seconds(daemon.proc.pid) - before) * 1000)
        return {"per_tick": per_tick, "percent": percent, "rss": rss,
                "ticks": total_ticks, "cpu": total_cpu, "wall": wall,
                "mean_tick": mean_tick, "errors": errors,
                "metrics_ms": statistics.median(scrape_ms), "metrics_kb": size / 1000}
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="CPU measurement (5)")
    parser.add_argument("--runs", type=int, default=3, help="processes per memory figure (3)")
    parser.add_argument("--large", type=int, default=1000, help="targets of the large run")
    parser.add_argument("--cpu-targets", type=int, default=100)
    parser.add_argument("--interval", type=float, default=15.0, help="of the CPU run (15)")
    parser.add_argument("--large-interval", type=float, default=LARGE_INTERVAL,
                        help="interval of the large run (45: longer than its tick here)")
    parser.add_argument("--ticks", type=int, default=3, help="ticks per memory run (3)")
    parser.add_argument("--history", type=float, default=HISTORY,
                        help="seconds of samples before the CPU run (130: the 2m window)")
    args = parser.parse_args()
    from tests.support.realenv import load_realenv

    realenv = load_realenv()
    host = realenv.docker_host
    load_before = loadavg()
    imports = import_costs()
    idle: list[float] = []
    large: list[float] = []
    large_tick: list[float] = []
    errors = {"idle": 0, "large": 0, "cpu": 0}
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp, \
            BenchStack(max(args.large, args.cpu_targets)) as stack, \
            swarm_service(host, realenv.busybox_image, "bench-footprint") as service:
        workdir = Path(tmp)
        for run in range(args.runs):
            print(f"idle, run {run + 1}/{args.runs} ...", flush=True)
            samples, _, errs = memory_run(workdir, config_for(stack.url, 1, service, 2.0),
                                          host, args.ticks, 120)
            idle += samples
            errors["idle"] += errs
        for run in range(args.runs):
            print(f"{args.large} targets, run {run + 1}/{args.runs} ...", flush=True)
            samples, mean_tick, errs = memory_run(
                workdir, config_for(stack.url, args.large, service, args.large_interval), host,
                args.ticks, 900)
            large += samples
            large_tick.append(mean_tick)
            errors["large"] += errs
        stack.wait_history(args.history)
        print(f"{args.cpu_targets} targets every {args.interval:g}s for {args.minutes:g} min "
              "...", flush=True)
        cpu = cpu_run(workdir, config_for(stack.url, args.cpu_targets, service, args.interval,
                                          timeout=None),
                      host, args.interval, args.minutes)
        errors["cpu"] = cpu["errors"]
        status_ms = status_cost(host, service)
    overall = cpu["cpu"] / cpu["wall"] * 100
    cpu_line = (f"| CPU, {args.cpu_targets} targets every {args.interval:g} s "
                f"(% of one core) | {spread(cpu['percent'], '{:.2f}')} | < {CPU_PERCENT:g} |"
                if cpu["percent"] else
                f"| CPU, {args.cpu_targets} targets every {args.interval:g} s "
                f"(% of one core) | {overall:.2f} | < {CPU_PERCENT:g} |")
    per_tick = spread(cpu["per_tick"]) if cpu["per_tick"] else (
        f"{cpu['cpu'] / max(cpu['ticks'], 1):.3f}")
    rows = [
        f"| RSS idle, 1 Swarm target (MB) | {spread(idle, '{:.1f}')} | <= {IDLE_MB:g} |",
        f"| RSS, {args.large:,} targets (MB) | {spread(large, '{:.1f}')} | <= {LARGE_MB:g} |",
        cpu_line,
        f"| CPU per tick, {args.cpu_targets} targets (s) | {per_tick} | |",
        f"| mean tick, {args.large:,} targets (s) | {spread(large_tick, '{:.2f}')} | |",
        f"| mean tick, {args.cpu_targets} targets (s) | {cpu['mean_tick']:.3f} | |",
    ]
    med = statistics.median(idle), statistics.median(large)
    cpu_per_target = cpu["cpu"] / max(cpu["ticks"], 1) / args.cpu_targets
    rest_ms = (cpu_per_target * 1000 - status_ms / args.cpu_targets
               - cpu["metrics_ms"] / args.cpu_targets)
    verdicts = [
        f"- idle <= {IDLE_MB:g} MB: {'met' if med[0] <= IDLE_MB else 'not met'}",
        f"- {args.large:,} targets <= {LARGE_MB:g} MB: "
        f"{'met' if med[1] <= LARGE_MB else 'not met'}",
        f"- {args.cpu_targets} targets < {CPU_PERCENT:g} % of one core: "
        f"{'met' if overall < CPU_PERCENT else 'not met'} ({overall:.2f} % over "
        f"{cpu['wall'] / 60:.1f} min, {cpu['ticks']} ticks)",
        f"- signals not `ok` (all ticks, first included): idle {errors['idle']}, "
        f"{args.large:,} targets {errors['large']}, {args.cpu_targets} targets "
        f"{errors['cpu']}",
    ]
    command = shlex.join(["scripts/bench", "footprint", *sys.argv[1:]])
    text = "\n".join([
        "## Footprint",
        "",
        f"Machine: {machine()}. Command: `{command}`. Load average (1/5/15 min): "
        f"{load_before} before, {loadavg()} after (other work shares the machine).",
        "",
        "A real `autoscaler run` process (dry-run targets, JSON log to a file, `/metrics` "
        f"scraped every {METRICS_EVERY:g} s). Every target has the three loop-cost policies "
        "on the loop-cost exporter, through a Prometheus of the benchmark's own, and is a "
        "Swarm target: the idle run has ONE target on one real service; the "
        f"{args.large:,}- and {args.cpu_targets}-target runs point every target at that "
        "same ONE real service (1,000 services would be 1,000 containers on 2 cores), read "
        "through the Docker API at every tick (one service list and one task list per tick, "
        "shared by every target), never writing. The CPU run: " + DEFAULTS + ". Memory: "
        f"VmRSS after tick{'s 3 to ' if args.ticks > 3 else ' '}"
        f"{args.ticks} of each of {args.runs} process(es) (idle every 2 s, "
        f"{args.large:,} targets every {args.large_interval:g} s); CPU: utime + stime over "
        f"{args.minutes:g} min in windows of about a minute (median of the windows), after "
        "two ticks.",
        "",
        "| what | median (min-max) | goal |",
        "|---|---|---|",
        *rows,
        "",
        *verdicts,
        "",
        "Reading: the idle figure is the interpreter and the libraries it imports, not "
        "data. RSS of a fresh interpreter after each group of the daemon's imports: "
        + ", ".join(f"{name} {mb:.1f} MB" for name, mb in imports)
        + f"; the idle median minus that: {med[0] - imports[-1][1]:+.1f} MB (threads, "
        "connection pools, buffers; near 0 it is noise). Each further target costs about "
        f"{(med[1] - med[0]) / max(args.large - 1, 1) * 1000:.0f} KB: its validated config "
        "and policies, its runtime and state, its telemetry series (gauges per target and "
        "policy, two histograms) and what one tick's answers leave in the allocator. CPU "
        f"per tick is {cpu_per_target * 1000:.1f} ms per target at {args.cpu_targets} "
        f"targets. Measured apart: the tick's one shared Swarm read (service list + task "
        f"list) costs {status_ms:.1f} ms of client CPU, {status_ms / args.cpu_targets:.2f} ms "
        f"per target; one scrape of `/metrics` ({cpu['metrics_kb']:.0f} KB at "
        f"{args.cpu_targets} targets) {cpu['metrics_ms']:.0f} ms of the daemon's CPU, once "
        f"per tick here. The rest, about {rest_ms:.1f} ms per target, is its three Prometheus "
        "queries through requests/urllib3 (one query per policy and target by default; the "
        "loop-cost table gives the CPU per query, and how much `group_by_label` saves) plus "
        "its decision, telemetry and JSON log line.",
    ])
    print(text)
    write_section("footprint", text)
    write_json({"status_ms": status_ms, "imports": imports, "idle": idle, "large": large,
                "large_tick": large_tick, "cpu": cpu, "errors": errors})


if __name__ == "__main__":
    main()
