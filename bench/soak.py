"""Soak: a real `autoscaler run` with N dry-run targets ticking every second for M minutes,
its resident memory, open file descriptors and threads sampled over time.

Run: `scripts/reliability soak [--minutes 30] [--targets 100]` (needs `scripts/testenv up`:
the real dockerd in swarm mode). Every target has the three loop-cost policies on the
benchmark exporter's series of its own service (`bench._exporter`), read through a Prometheus
of the run's own (`bench._stack.BenchStack`, scraping every 2 s); every target is a dry-run
Swarm target pointing at ONE real service made for the run (N services would be N containers
on 2 cores): each reads it through the Docker API at every tick and never writes.

Pass: RSS after the warm-up (6 minutes: the 5-minute default scale-down stabilization window
fills the targets' recommendation history until then; a third of a shorter run) grows under
10 % (median
of the first minute after the warm-up against the median of the last minute), the open file
descriptors and threads do not grow (the highest count in the last minute is not above the
highest in the first minute after the warm-up), and no error after the warm-up (signals not
`ok`, failed backend calls, ERROR log lines). Writes the "soak" section of
docs/reliability.md (or of the file $RELIABILITY_DOC names).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from bench._stack import (
    REPO,
    SCRAPE_INTERVAL,
    BenchStack,
    free_port,
    stop_process,
    swarm_service,
)
from bench._stack import synthetic_target as _target
from bench.reliability_doc import write_section
from bench.report import machine

RSS_GROWTH_LIMIT = 10.0  # percent
# The longest history a target keeps is the HPA's default scale-down stabilization window
# (300 s of recommendations): until it is full, memory grows by design. One minute on top.
WARMUP = 360.0
SAMPLE_EVERY = 5.0  # seconds between /proc samples
METRICS_EVERY = 15.0  # a Prometheus scraping the daemon's /metrics at the default interval
_COUNTER = re.compile(r"^(autoscaler_[a-z_]+)(\{[^}]*\})? (\S+)$", re.M)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KB), Threads and open fds of a process, from /proc."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def counters(text: str) -> dict[str, float]:
    """Totals of the daemon's counters we watch, summed over their labels."""
    wanted = ("autoscaler_ticks_total", "autoscaler_query_errors_total",
              "autoscaler_actuation_errors_total", "autoscaler_decisions_total")
    totals = dict.fromkeys(wanted, 0.0)
    for name, _labels, value in _COUNTER.findall(text):
        if name in totals:
            totals[name] += float(value)
    return totals


class LogCounter(threading.Thread):
    """Reads the daemon's JSON log from a pipe: counts records by level and keeps the last
    non-decision lines (a decision line per target per tick would fill a disk in 30 min)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.levels: collections.Counter[str] = collections.Counter()
        self.decisions = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.first_errors: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            with self.lock:
                if isinstance(record, dict) and record.get("event") == "decision":
                    self.decisions += 1
                    continue
                level = record.get("level", "?") if isinstance(record, dict) else "text"
                self.levels[str(level)] += 1
                self.tail.append(line[:500])
                if level in ("ERROR", "CRITICAL", "text") and len(self.first_errors) < 5:
                    self.first_errors.append(line[:500])

    def errors(self) -> int:
        with self.lock:
            return self.levels["ERROR"] + self.levels["CRITICAL"] + self.levels["text"]


@dataclass
class Sample:
    t: float  # seconds since the daemon started
    rss_mb: float
    fds: int
    threads: int


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    counters_at: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    log_errors_at: list[tuple[float, int]] = field(default_factory=list)


def soak_config(url: str, targets: int, service: str, port: int) -> dict[str, Any]:
    return {
        "evaluation_interval": "1s",
        "prometheus": {"url": url, "timeout": "5s", "scrape_interval": f"{SCRAPE_INTERVAL:g}s"},
        "listen": f"127.0.0.1:{port}",
        "targets": [_target(i, service=service) for i in range(targets)],
    }


def run_soak(url: str, docker_host: str, service: str, targets: int, seconds: float,
             workdir: Path) -> tuple[Soak, LogCounter, int]:
    port = free_port()
    config = workdir / "soak.yaml"
    config.write_text(yaml.safe_dump(soak_config(url, targets, service, port), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    env.update(DOCKER_HOST=docker_host, NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    proc = subprocess.Popen([sys.executable, "-m", "autoscaler.cli", "run", "--config",
                             str(config)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    reader = LogCounter(proc.stderr)
    reader.start()
    soak = Soak()
    t0 = time.monotonic()
    next_metrics = t0
    session = requests.Session()
    session.trust_env = False
    try:
        while (now := time.monotonic()) - t0 < seconds:
            if proc.poll() is not None:
                reader.join(timeout=5)
                tail = "\n".join(reader.tail)
                raise RuntimeError(f"the daemon exited ({proc.returncode}):\n{tail}")
            st = proc_status(proc.pid)
            soak.samples.append(Sample(now - t0, st["VmRSS"] * 1024 / 1e6, st["fds"],
                                       st["Threads"]))
            soak.log_errors_at.append((now - t0, reader.errors()))
            if now >= next_metrics:
                with contextlib.suppress(requests.RequestException):
                    text = session.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                    soak.counters_at.append((time.monotonic() - t0, counters(text)))
                next_metrics = now + METRICS_EVERY
            time.sleep(max(0.0, SAMPLE_EVERY - (time.monotonic() - now)))
        with contextlib.suppress(requests.RequestException):
            text = session.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            soak.counters_at.append((time.monotonic() - t0, counters(text)))
    finally:
        session.close()
        stop_process(proc)
        reader.join(timeout=10)
    return soak, reader, int(proc.returncode if proc.returncode is not None else -1)


def _at(series: list[tuple[float, Any]], t: float) -> Any:
    """The last value recorded at or before `t` (the first one if none)."""
    found = series[0][1]
    for when, value in series:
        if when > t:
            break
        found = value
    return found


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def analyse(soak: Soak, warmup: float) -> dict[str, Any]:
    measured = [s for s in soak.samples if s.t >= warmup]
    if len(measured) < 2:
        raise RuntimeError("too few samples after the warm-up: run longer")
    span = min(60.0, (measured[-1].t - measured[0].t) / 3)
    first = [s for s in measured if s.t <= measured[0].t + span]
    last = [s for s in measured if s.t >= measured[-1].t - span]
    start_rss = statistics.median(s.rss_mb for s in first)
    end_rss = statistics.median(s.rss_mb for s in last)
    c_start = _at(soak.counters_at, warmup)
    c_end = soak.counters_at[-1][1]
    log_start = _at(soak.log_errors_at, warmup)
    log_end = soak.log_errors_at[-1][1]
    errors_after = {
        "signals not ok": c_end["autoscaler_query_errors_total"]
        - c_start["autoscaler_query_errors_total"],
        "backend errors": c_end["autoscaler_actuation_errors_total"]
        - c_start["autoscaler_actuation_errors_total"],
        "ERROR log lines": log_end - log_start,
    }
    errors_total = {
        "signals not ok": c_end["autoscaler_query_errors_total"],
        "backend errors": c_end["autoscaler_actuation_errors_total"],
        "ERROR log lines": log_end,
    }
    growth = (end_rss - start_rss) / start_rss * 100
    half = [s for s in measured if s.t >= (measured[0].t + measured[-1].t) / 2]
    slope = _slope([(s.t, s.rss_mb) for s in half]) * 3600
    fds = (max(s.fds for s in first), max(s.fds for s in last))
    threads = (max(s.threads for s in first), max(s.threads for s in last))
    return {
        "warmup_s": warmup, "window_s": span,
        "rss_start": start_rss, "rss_end": end_rss,
        "rss_max": max(s.rss_mb for s in measured),
        "rss_max_all": max(s.rss_mb for s in soak.samples),
        "rss_growth_pct": growth, "rss_slope_mb_per_hour_last_half": slope,
        "fds_first": fds[0], "fds_last": fds[1], "fds_max": max(s.fds for s in measured),
        "threads_first": threads[0], "threads_last": threads[1],
        "threads_max": max(s.threads for s in measured),
        "ticks": c_end["autoscaler_ticks_total"],
        "ticks_after_warmup": c_end["autoscaler_ticks_total"] - c_start["autoscaler_ticks_total"],
        "decisions": c_end["autoscaler_decisions_total"],
        "errors_after_warmup": errors_after, "errors_total": errors_total,
        "samples": len(soak.samples),
        "checks": {
            f"RSS grows under {RSS_GROWTH_LIMIT:g} %": growth < RSS_GROWTH_LIMIT,
            "fds do not grow": fds[1] <= fds[0],
            "threads do not grow": threads[1] <= threads[0],
            "no error after the warm-up": not any(errors_after.values()),
            "it ticked after the warm-up":
                c_end["autoscaler_ticks_total"] > c_start["autoscaler_ticks_total"],
        },
    }


def render(figures: dict[str, Any], *, minutes: float, targets: int, command: str,
           started: str, ended: str, exit_code: int, trace: list[Sample]) -> str:
    ok = all(figures["checks"].values())
    errs_a, errs_t = figures["errors_after_warmup"], figures["errors_total"]
    checks = "\n".join(f"- {name}: {'yes' if good else 'NO'}"
                       for name, good in figures["checks"].items())
    step = max(1, len(trace) // 12)
    rows = [f"| {s.t / 60:.1f} | {s.rss_mb:.1f} | {s.fds} | {s.threads} |"
            for s in (*trace[::step], trace[-1])]
    return "\n".join([
        "## Soak",
        "",
        "A real `autoscaler run` process with dry-run targets ticking every second for a long "
        "time; its resident memory (VmRSS), open file descriptors and thread count are "
        f"sampled from /proc every {SAMPLE_EVERY:g} s and its `/metrics` scraped every "
        f"{METRICS_EVERY:g} s, as a Prometheus would. Each target has the three loop-cost "
        "policies (capacity on a rate, threshold with `for: 30s`, queue trend over 2m) on its "
        "own service's series of the benchmark exporter, through a Prometheus of the run's "
        f"own scraping every {SCRAPE_INTERVAL:g} s, and is a Swarm target reading ONE real "
        "service on the test dockerd at every tick (never writing: dry-run). With 1 s "
        "evaluation interval and more targets than one second holds, ticks run back to back "
        "(late ticks coalesce).",
        "",
        "Pass: after the warm-up (6 minutes by default: until the 5-minute default scale-down "
        "stabilization window has filled every target's recommendation history, memory grows "
        "by design), RSS grows under 10 % (median of the first minute against "
        "the median of the last minute), open fds and threads do not grow (the highest count "
        "in the last minute is not above the highest in the first), and no error: no signal "
        "other than `ok`, no failed backend call, no ERROR log line.",
        "",
        "Command: `scripts/reliability soak [--minutes 30] [--targets 100]` (needs "
        "`scripts/testenv up`); the default test run has a 1-minute smoke version "
        "(`tests/integration/test_reliability_soak.py`, 10 targets, writing to a temporary "
        "file) that checks the command measures and reports no errors, not the thresholds.",
        "",
        f"Last run: `{command}`, {started} to {ended} (UTC). Machine: {machine()}; "
        "other helpers' tests shared the machine during the run.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| duration, targets | {minutes:g} min, {targets} targets |",
        f"| warm-up left out | {figures['warmup_s']:.0f} s |",
        f"| ticks (after warm-up) | {figures['ticks']:.0f} ({figures['ticks_after_warmup']:.0f})"
        " |",
        f"| decisions logged | {figures['decisions']:.0f} |",
        f"| RSS start (after warm-up) / end / max (MB) | {figures['rss_start']:.1f} / "
        f"{figures['rss_end']:.1f} / {figures['rss_max']:.1f} |",
        f"| RSS growth after warm-up | {figures['rss_growth_pct']:+.1f} % |",
        "| RSS trend over the second half (least squares) | "
        f"{figures['rss_slope_mb_per_hour_last_half']:+.2f} MB/hour |",
        f"| open fds first / last minute (max) | {figures['fds_first']} / "
        f"{figures['fds_last']} ({figures['fds_max']}) |",
        f"| threads first / last minute (max) | {figures['threads_first']} / "
        f"{figures['threads_last']} ({figures['threads_max']}) |",
        "| errors after warm-up (signals not ok, backend, ERROR lines) | "
        f"{errs_a['signals not ok']:.0f}, {errs_a['backend errors']:.0f}, "
        f"{errs_a['ERROR log lines']:.0f} |",
        "| errors, whole run incl. warm-up | "
        f"{errs_t['signals not ok']:.0f}, {errs_t['backend errors']:.0f}, "
        f"{errs_t['ERROR log lines']:.0f} |",
        f"| daemon exit code on SIGTERM | {exit_code} |",
        "",
        checks,
        "",
        f"Result: {'passed' if ok else 'FAILED'} ({ended[:10]}).",
        "",
        "Over time (minutes since start):",
        "",
        "| min | RSS MB | fds | threads |",
        "|---|---|---|---|",
        *rows,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out at the start (default: 360, or a third of a "
                             "shorter run)")
    args = parser.parse_args(argv)
    from tests.support.realenv import load_realenv

    realenv = load_realenv()
    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(WARMUP, seconds / 3)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, BenchStack(args.targets) as stack, \
            swarm_service(realenv.docker_host, realenv.busybox_image, "soak") as service:
        print(f"soak: {args.targets} targets every 1s for {args.minutes:g} min "
              f"(warm-up {warmup:g}s) ...", flush=True)
        soak, reader, code = run_soak(stack.url, realenv.docker_host, service, args.targets,
                                      seconds, Path(tmp))
    ended = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    figures = analyse(soak, warmup)
    command = shlex.join(["scripts/reliability", "soak", *(argv if argv is not None
                                                           else sys.argv[1:])])
    text = render(figures, minutes=args.minutes, targets=args.targets, command=command,
                  started=started, ended=ended, exit_code=code, trace=soak.samples)
    print(text)
    if reader.first_errors:
        print("first error lines:\n" + "\n".join(reader.first_errors), file=sys.stderr)
    path = write_section("soak", text)
    print(f"wrote the soak section of {path}")
    if os.environ.get("SOAK_JSON"):
        Path(os.environ["SOAK_JSON"]).write_text(json.dumps(figures, indent=2))
    return 0 if all(figures["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
