"""Reaction time on the real stack: a demand step in the Stalwart emulator until the scale
write is seen on a real Swarm service and on a real Kubernetes Deployment.

Run: `scripts/bench reaction [--trials 10]` (needs `scripts/testenv up`). The emulator is
registered in the shared Prometheus (scrape interval 1 s); the daemon runs in-process (the
`autoscaler run` engine on APScheduler) every 1 s with the capacity policy on the inflow
counters over a 10 s rate window. Each trial starts from 1 replica with the demand at the low
level for a full rate window, with a fresh engine started at a random moment and the step
after a random 0-1 s (so it falls anywhere between two scrapes and two ticks); the demand steps
up and the workload's spec is polled every 50 ms until it changes; then the demand drops back
and the workload returns to 1 before the next trial.
Writes the "reaction" section of docs/benchmarks.md.
Goal (benchmark issue): p95 <= scrape interval + evaluation interval + 1 s = 3 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests

from bench._stack import loadavg, wait_until, write_json
from bench.report import machine, write_section

SCRAPE, INTERVAL = 1.0, 1.0
GOAL = SCRAPE + INTERVAL + 1.0
WINDOW = 10.0  # rate window of the policy, seconds
POLL = 0.05  # how often the workload's spec is read, seconds
EMULATOR_POLL = 0.25  # how often the emulator steps its counters, seconds
MAX_REPLICAS = 3
STEP_SEEN = 3  # inbound messages between two scrapes that show the step has been scraped


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Trial:
    reaction: float  # step -> new spec observed
    scrape_wait: float  # step -> first scrape that holds the new demand
    tick_wait: float  # that scrape -> start of the tick that wrote
    tick_to_seen: float  # start of that tick -> new spec observed


@dataclass
class TickLog:
    """Start, end and whether it wrote, of every tick of the engine (wrapped)."""

    ticks: list[tuple[float, float, bool]] = field(default_factory=list)

    def wrap(self, engine: Any) -> None:
        inner = engine.tick

        def tick() -> Any:
            start = time.time()
            outcomes = inner()
            self.ticks.append((start, time.time(), any(o.written for o in outcomes)))
            return outcomes

        engine.tick = tick

    def first_write_after(self, t: float) -> tuple[float, float] | None:
        return next(((s, e) for s, e, w in self.ticks if w and e >= t), None)

    def last_write(self) -> float:
        return max((e for _, e, w in self.ticks if w), default=0.0)


def first_scrape_with_step(prometheus: str, cluster: str, t: float) -> float | None:
    """Timestamp of the first scrape after `t` whose inbound counter shows the new demand: it
    grew by STEP_SEEN or more since the series' previous sample (at the low demand it grows by
    0 or 1 per scrape). A scrape that came before the emulator stepped its counters misses it.
    """
    query = f'queue_queue_message{{cluster="{cluster}"}}[20s]'
    try:
        body = requests.get(f"{prometheus}/api/v1/query",
                            params={"query": query, "time": f"{t + 15:.3f}"}, timeout=10).json()
        found = []
        for series in body["data"]["result"]:
            points = [(float(ts), float(v)) for ts, v in series["values"]]
            found += [ts for (_, v0), (ts, v) in itertools.pairwise(points)
                      if ts > t and v - v0 >= STEP_SEEN]
    except (requests.RequestException, KeyError, ValueError, TypeError):
        return None
    return min(found, default=None)


# --------------------------------------------------------------------------- workloads


@contextmanager
def swarm_workload(realenv: Any) -> Iterator[tuple[Any, dict[str, Any], Callable[[], int]]]:
    import docker

    from tests.support.e2e import spec_replicas, swarm_service
    from tools.emulator import SwarmTasks

    client = docker.DockerClient(base_url=realenv.docker_host, timeout=60)
    try:
        with swarm_service(client, realenv.busybox_image) as service:
            yield (SwarmTasks(service.name, client=client),
                   {"backend": "swarm", "service": service.name},
                   lambda: spec_replicas(client, service.name))
    finally:
        client.close()


@contextmanager
def kubernetes_workload(realenv: Any) -> Iterator[tuple[Any, dict[str, Any], Callable[[], int]]]:
    import kubernetes.client as k
    import kubernetes.config

    from tools.emulator import KubernetesReplicas

    api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(realenv.kubeconfig))
    core, apps = k.CoreV1Api(api), k.AppsV1Api(api)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k.V1Namespace(metadata=k.V1ObjectMeta(name=ns)))
    try:
        apps.create_namespaced_deployment(ns, {  # type: ignore[arg-type]
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "smtp"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "smtp"}},
                     "template": {"metadata": {"labels": {"app": "smtp"}},
                                  "spec": {"containers": [{"name": "stalwart",
                                                           "image": realenv.busybox_image}]}}}})
        yield (KubernetesReplicas(ns, "deployment", "smtp", api_client=api),
               {"backend": "kubernetes", "namespace": ns, "deployment": "smtp"},
               lambda: int(apps.read_namespaced_deployment("smtp", ns).spec.replicas or 0))
    finally:
        core.delete_namespace(ns)
        api.close()


WORKLOADS = {"swarm": swarm_workload, "kubernetes": kubernetes_workload}


# --------------------------------------------------------------------------- trials


def run_backend(backend: str, realenv: Any, trials: int, low: float, high: float,
                rng: random.Random) -> list[Trial]:
    from autoscaler.cli import _engine
    from tests.support.e2e import (
        inflow_capacity,
        prom_value,
        registered,
        running,
        settings_for,
    )
    from tools.emulator import Emulator

    prometheus = realenv.prometheus_url
    results: list[Trial] = []
    with WORKLOADS[backend](realenv) as (source, fields, replicas), \
            Emulator(source, demand=low, startup_delay=1, poll=EMULATOR_POLL) as emulator, \
            registered(realenv, emulator) as cluster:
        policy = inflow_capacity(cluster, f"{WINDOW:g}s")
        wait_until(lambda: (prom_value(prometheus, policy["query"]) or 0) > 0, 60,
                 "the emulator's inflow in Prometheus")
        target = {"name": "smtp", **fields, "min_replicas": 1, "max_replicas": MAX_REPLICAS,
                  "cooldown": {"up": "0s", "down": "0s"},
                  "behavior": {
                      "scaleUp": {"stabilizationWindowSeconds": 0,
                                  "policies": [{"type": "Pods", "value": 20,
                                                "periodSeconds": 1}]},
                      "scaleDown": {"stabilizationWindowSeconds": 0,
                                    "policies": [{"type": "Pods", "value": 20,
                                                  "periodSeconds": 1}]}},
                  "policies": [policy]}
        settings = settings_for(prometheus, target, interval=f"{INTERVAL:g}s")
        low_since = time.time()
        for number in range(1, trials + 1):
            # A fresh engine per trial, started at a random moment: the phase of its ticks
            # against the scrapes changes from trial to trial (with one engine it would not).
            engine = _engine(settings, dry_run=False, everything_dry=False)
            log = TickLog()
            log.wrap(engine)
            time.sleep(rng.uniform(0, INTERVAL))
            with running(engine, settings.evaluation_interval):
                # Same start every time: 1 replica, a full rate window of low demand, and
                # no write for as long.
                wait_until(lambda: replicas() == 1, 120, "the workload back at 1 replica")
                quiet = max(low_since + WINDOW + 2, log.last_write() + WINDOW + 2)
                time.sleep(max(0.0, quiet - time.time()) + rng.uniform(0, SCRAPE))
                if replicas() != 1:
                    raise RuntimeError("the workload left 1 replica with the demand low")
                t0 = time.time()
                emulator.set_demand(high)
                wait_until(lambda: replicas() > 1, 60, "the scale-up write", every=POLL)
                seen = time.time()
                emulator.set_demand(low)
                low_since = time.time()
                wrote = wait_until(partial(log.first_write_after, t0), 10, "the writing tick")
            scrape = first_scrape_with_step(prometheus, cluster, t0)
            if scrape is None:
                raise RuntimeError("no scrape after the step shows the new demand")
            trial = Trial(seen - t0, scrape - t0, wrote[0] - scrape, seen - wrote[0])
            results.append(trial)
            print(f"{backend} trial {number}/{trials}: {trial.reaction:.2f} s "
                  f"(scrape +{trial.scrape_wait:.2f}, tick +{trial.tick_wait:.2f}, "
                  f"write seen +{trial.tick_to_seen:.2f})", flush=True)
    return results


def fmt_row(backend: str, trials: list[Trial]) -> str:
    r = [t.reaction for t in trials]
    parts = [statistics.median(getattr(t, k) for t in trials)
             for k in ("scrape_wait", "tick_wait", "tick_to_seen")]
    return (f"| {backend} | {len(r)} | {statistics.median(r):.2f} | {percentile(r, 0.95):.2f} "
            f"| {min(r):.2f}-{max(r):.2f} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} |")


def render(results: dict[str, list[Trial]], command: str, loads: tuple[str, str],
           low: float, high: float) -> str:
    # The 1-replica capacity is per_instance / headroom = 10,000 / 1.5 emails/h: the rate
    # over the window crosses it once (high - low) x held / window > threshold - low.
    threshold = 10000.0 / 1.5
    crossing = WINDOW * (threshold - low) / (high - low)
    verdicts = []
    for backend, trials in results.items():
        p95 = percentile([t.reaction for t in trials], 0.95)
        verdicts.append(f"- {backend}: p95 {p95:.2f} s, goal <= {GOAL:g} s: "
                        f"{'met' if p95 <= GOAL else 'not met'}")
    return "\n".join([
        "## Reaction time",
        "",
        f"Machine: {machine()}. Command: `{command}`. Load average (1/5/15 min): "
        f"{loads[0]} before, {loads[1]} after (other work shares the machine).",
        "",
        f"Stack: the shared Prometheus (scrape interval {SCRAPE:g} s) scraping the Stalwart "
        f"emulator (counters stepped every {EMULATOR_POLL:g} s); the daemon in-process "
        f"(`autoscaler run`'s engine on APScheduler) every {INTERVAL:g} s with the capacity "
        f"policy on the inflow counters over a {WINDOW:g} s rate window, writing for real; "
        f"the workload's spec read every {POLL * 1000:g} ms. Demand steps from {low:,.0f} "
        f"to {high:,.0f} emails/h (1 replica -> max {MAX_REPLICAS}), from 1 replica and a full "
        "rate window of low demand, with a fresh engine per trial started at a random "
        "moment and the step after a random 0-1 s (random phases against scrapes and "
        "ticks). Reaction: from the step to the new spec seen. The three right-hand "
        "columns split it (medians): step -> first scrape that holds the new demand, that "
        "scrape -> start of the tick that wrote, that tick's start -> new spec seen.",
        "",
        "| backend | trials | p50 s | p95 s | min-max s | scrape wait | tick wait "
        "| tick -> seen |",
        "|---|---|---|---|---|---|---|---|",
        *(fmt_row(b, t) for b, t in results.items()),
        "",
        *verdicts,
        "",
        "Reading: the reaction is the wait for a scrape that holds the new demand (up to "
        f"one scrape interval, plus up to the emulator's {EMULATOR_POLL:g} s counter step), "
        "then the wait for the next tick (up to one evaluation interval, plus the time "
        "Prometheus takes to make a scrape queryable), then the tick itself (one query, one "
        "backend read, the write) and the 50 ms poll that sees it: about 0 to "
        f"{SCRAPE + INTERVAL + EMULATOR_POLL:g} s plus the tick. No stabilization or "
        "cooldown waits (both 0 here). The rate window waits little: the step is large on "
        f"purpose, so the {WINDOW:g} s rate crosses the scale-up point once a scrape holds "
        f"about {crossing:.2f} s of the new demand; a scrape that holds less (the step "
        "came just before it) still counts as the first that holds it, and the decision "
        "waits for the next one: the long 'tick wait' trials. A step just above the "
        "scale-up point adds the time the rate window takes to fill: about window x "
        "(threshold - before) / (after - before), up to the whole window; a scale-up "
        "stabilization window adds itself.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10, help="trials per backend (10)")
    parser.add_argument("--backends", default="swarm,kubernetes")
    parser.add_argument("--low", type=float, default=2000.0, help="emails/hour before the step")
    parser.add_argument("--high", type=float, default=400000.0, help="emails/hour after it")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from tests.support.realenv import load_realenv

    realenv = load_realenv()
    os.environ["DOCKER_HOST"] = realenv.docker_host
    os.environ["KUBECONFIG"] = str(realenv.kubeconfig)
    command = shlex.join(["scripts/bench", "reaction", *sys.argv[1:]])
    rng = random.Random(args.seed)
    load_before = loadavg()
    results = {b: run_backend(b, realenv, args.trials, args.low, args.high, rng)
               for b in args.backends.split(",")}
    text = render(results, command, (load_before, loadavg()), args.low, args.high)
    print(text)
    write_section("reaction", text)
    write_json({b: [t.__dict__ for t in ts] for b, ts in results.items()})


if __name__ == "__main__":
    main()
