"""`simulate`: a demand trace drives the plant; the same policies and decide() as live.

The clock is simulated. Every `scrape_interval` the plant is scraped, every evaluation
interval the target is evaluated through `autoscaler.evaluate` exactly as the live loop does,
and the decision is applied to the plant after no delay (a Swarm or Kubernetes write returns
in milliseconds; what takes time is the start-up delay, which the plant models).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autoscaler.behavior import Behavior
from autoscaler.config import GuardConfig, Settings, TargetConfig
from autoscaler.decide import TargetRules
from autoscaler.model import Decision, Signal, SignalState
from autoscaler.replay.evaluations import ReplayTarget
from autoscaler.replay.plant import HistoryFeed, Plant, PlantParams, ScrapeHistory
from autoscaler.trace import Trace, demand_at
from policies import Policy
from policies.base import HISTORY_STEP, PLANT_SIGNALS, ceil_exact
from policies.capacity import replicas_for_rate
from policies.target_value import TargetValuePolicy

Baseline = Literal["hpa-cpu", "static"]
BASELINES: tuple[Baseline, ...] = ("hpa-cpu", "static")
HPA_SYNC_PERIOD = 15.0


def plant_signal_name(query: str, simulate_as: str | None) -> str | None:
    """The plant signal a policy or guard reads in simulate, or None if it has none."""
    if simulate_as:
        return simulate_as
    name = query.strip()
    return name if name in PLANT_SIGNALS else None


def plant_signal_names(items: Sequence[Policy | GuardConfig],
                       not_simulated: list[str]) -> dict[str, str]:
    """label -> plant signal for the policies or guards that have one; the others' labels
    are appended to `not_simulated` (listed in the summary, never silently dropped)."""
    names: dict[str, str] = {}
    for item in items:
        name = plant_signal_name(item.query, item.simulate_as)
        if name is None:
            not_simulated.append(item.label)
        else:
            names[item.label] = name
    return names


@dataclass(frozen=True)
class Contender:
    """What is being simulated: a name, policies, guards, rules and its sync period."""

    name: str
    policies: tuple[Policy, ...]
    guards: tuple[GuardConfig, ...]
    rules: TargetRules
    interval: float
    static_replicas: int | None = None
    # Oracles bypass the engine: the replica count at each evaluation comes from here.
    schedule: Callable[[float], int] | None = None


def profile_contender(settings: Settings, target: TargetConfig) -> Contender:
    """The target as configured."""
    return Contender("profile", tuple(target.effective_policies()),
                     tuple(target.effective_guards()), target.rules(),
                     settings.evaluation_interval)


def hpa_cpu_contender(target: TargetConfig) -> Contender:
    """HPA's rule on CPU at 70 % with HPA's default behavior, no cooldowns, a 15 s sync."""
    policy = TargetValuePolicy(type="target_value", name="cpu", query="cpu", simulate_as="cpu",
                               target=70.0)
    rules = TargetRules(min_replicas=target.min_replicas, max_replicas=target.max_replicas,
                        behavior=Behavior.hpa_default())
    return Contender("hpa-cpu", (policy,), (), rules, HPA_SYNC_PERIOD)


def static_contender(target: TargetConfig, trace: Trace, per_instance: float) -> Contender:
    """The guide's formula applied once to the trace's peak, held throughout."""
    replicas = max(1, replicas_for_rate(trace.peak, per_instance, 1.5))
    rules = TargetRules(min_replicas=replicas, max_replicas=replicas)
    return Contender("static", (), (), rules, HPA_SYNC_PERIOD, static_replicas=replicas)


def needed(demand: float, per_instance: float, lo: int, hi: int) -> int:
    """Instances that serve `demand` exactly, within the target's bounds."""
    return max(lo, min(hi, ceil_exact(demand / per_instance)))


def reactive_oracle_contender(target: TargetConfig, trace: Trace, params: PlantParams,
                              interval: float) -> Contender:
    """Knows the current demand exactly at every evaluation; held back only by start-up."""
    lo, hi, cap = target.min_replicas, target.max_replicas, params.capacity_per_instance

    def schedule(t: float) -> int:
        return needed(demand_at(trace, t), cap, lo, hi)

    return Contender("reactive-oracle", (), (), TargetRules(lo, hi), interval,
                     schedule=schedule)


def clairvoyant_oracle_contender(target: TargetConfig, trace: Trace, params: PlantParams,
                                 interval: float) -> Contender:
    """Knows the future: at each moment the instances needed at any time within the next
    start-up delay (so they serve in time), and no more: the fewest that never overload."""
    lo, hi, cap = target.min_replicas, target.max_replicas, params.capacity_per_instance
    horizon = params.startup_delay + interval
    ts, need = trace.t, [needed(d, cap, lo, hi) for d in trace.demand]

    def schedule(t: float) -> int:
        # From one interval back (the plant runs the step before an evaluation at the
        # demand then) to the start-up delay ahead.
        i = max(0, bisect.bisect_right(ts, t - interval) - 1)
        j = bisect.bisect_right(ts, t + horizon)
        return max(need[i:max(j, i + 1)])

    return Contender("clairvoyant-oracle", (), (), TargetRules(lo, hi), interval,
                     schedule=schedule)


@dataclass
class RunResult:
    """A finished simulation: the timeline, scale events, unsimulated policies, summary."""

    contender: str
    timeline: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    not_simulated: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    clip_counts: dict[str, int] = field(default_factory=dict)
    last_decision: Decision | None = None


def _follow_schedule(wanted: int, plant: Plant, result: RunResult, t: float,
                     t0: float) -> None:
    """An oracle's evaluation: the count its schedule names, no rules in between."""
    if wanted != plant.replicas:
        result.events.append({"t": round(t - t0, 3), "from": plant.replicas,
                              "to": wanted, "winner": "oracle", "reason": ""})
        plant.set_replicas(wanted, t)


Reads = list[tuple[str, str, float]]


def history_feeds(policies: Sequence[Policy],
                  names: Mapping[str, str]) -> dict[str, tuple[str, HistoryFeed]]:
    """label -> (plant signal, feed) for each learning policy: its past is fed from the
    plant's own scraped series, in the same Signal shape as the live source's history read,
    never ahead of the simulated clock."""
    return {p.label: (names[p.label], HistoryFeed(HISTORY_STEP))
            for p in policies if p.history_seconds() > 0}


def _decide(target: ReplayTarget, plant: Plant, history: ScrapeHistory,
            reads: tuple[Reads, Reads], result: RunResult, t: float, t0: float,
            ready: int, feeds: Mapping[str, tuple[str, HistoryFeed]]) -> None:
    """One evaluation of the contender's rules on what was scraped, acted on at once."""
    policy_reads, guard_reads = reads
    psignals = {label: history.signal(name, t, window) for label, name, window in policy_reads}
    for label, (name, feed) in feeds.items():
        psignals[label] = feed.signal(psignals[label], history.series[name], t)
    gsignals = {label: history.signal(name, t, window) for label, name, window in guard_reads}
    decision = target.evaluate(t, plant.replicas, ready, psignals, gsignals)
    if decision.desired != plant.replicas:
        result.events.append({
            "t": round(t - t0, 3), "from": plant.replicas, "to": decision.desired,
            "winner": decision.winner,
            "reason": next((p.reason for p in decision.policies
                            if p.name == decision.winner), ""),
        })
        plant.set_replicas(decision.desired, t)
    result.last_decision = decision


def simulate(
    contender: Contender, trace: Trace, params: PlantParams, initial_replicas: int,
    *, step: float | None = None,
) -> RunResult:
    """Run one contender over the trace; returns the timeline and a summary."""
    result = RunResult(contender.name)
    dt = step or min(params.scrape_interval, contender.interval)
    t0, t_end = trace.t[0], trace.t[-1]
    start = contender.static_replicas or initial_replicas
    plant = Plant.running(params, start, t0)
    policy_names = plant_signal_names(contender.policies, result.not_simulated)
    policies = [p for p in contender.policies if p.label in policy_names]
    guard_names = plant_signal_names(contender.guards, result.not_simulated)
    guards = [g for g in contender.guards if g.label in guard_names]
    target = ReplayTarget(contender.name, policies, guards, contender.rules)
    history = ScrapeHistory(params, {*policy_names.values(), *guard_names.values()})
    # What each policy and guard reads at every evaluation: (label, plant signal, window).
    reads = ([(p.label, policy_names[p.label], max(p.window_seconds(), 0.0)) for p in policies],
             [(g.label, guard_names[g.label], 0.0) for g in guards])
    feeds = history_feeds(policies, policy_names)

    next_scrape = t0
    next_eval = t0 + contender.interval
    i_trace, n_trace = 0, len(trace.t)
    overload = replica_seconds = 0.0
    peak_queue = worst_delay = 0.0
    last_cpu: float | None = None
    t = t0
    while t < t_end - 1e-9:
        while i_trace + 1 < n_trace and trace.t[i_trace + 1] <= t + 1e-9:
            i_trace += 1
        demand = trace.demand[i_trace]
        capacity, _ = plant.step(t, dt, demand)
        replica_seconds += plant.replicas * dt
        if demand > capacity + 1e-9:
            overload += dt
        peak_queue = max(peak_queue, plant.queue)
        if plant.queue > 1e-6:
            delay = plant.queue / (capacity / 3600.0) if capacity > 0 else math.inf
            worst_delay = max(worst_delay, delay)
        t += dt
        if t >= next_scrape - 1e-9:
            history.scrape(plant, t)
            cpu = history.series["cpu"]
            last_cpu = cpu[-1].value if cpu else last_cpu
            next_scrape += params.scrape_interval
        if t >= next_eval - 1e-9:
            next_eval += contender.interval
            ready = plant.serving(t)
            if contender.schedule is not None:
                _follow_schedule(contender.schedule(t), plant, result, t, t0)
            else:
                _decide(target, plant, history, reads, result, t, t0, ready, feeds)
            result.timeline.append({
                "t": round(t - t0, 3), "demand": demand, "replicas": plant.replicas,
                "ready": ready, "queue": round(plant.queue, 3),
                "cpu": None if last_cpu is None else round(last_cpu, 3),
                "capacity": capacity,
            })
    clips = target.clips
    result.clip_counts = clips
    result.summary = {
        "contender": contender.name,
        "duration_hours": round((t_end - t0) / 3600.0, 3),
        "overload_seconds": round(overload, 1),
        "peak_queue": round(peak_queue, 1),
        "worst_queue_delay_seconds": None if math.isinf(worst_delay) else round(worst_delay, 1),
        "replica_hours": round(replica_seconds / 3600.0, 2),
        "scale_events": len(result.events),
        "peak_replicas": max((r["replicas"] for r in result.timeline), default=start),
        "min_replicas_seen": min((r["replicas"] for r in result.timeline), default=start),
        "clips": dict(sorted(clips.items())),
        "not_simulated": list(result.not_simulated),
    }
    return result


def contenders_for(
    settings: Settings, target: TargetConfig, trace: Trace, baseline: Baseline | None,
    compare: bool,
) -> list[Contender]:
    """The selected contender first, then (with `compare`) the others."""
    per_instance = settings.simulation.capacity_per_instance
    everyone = {
        "profile": profile_contender(settings, target),
        "hpa-cpu": hpa_cpu_contender(target),
        "static": static_contender(target, trace, per_instance),
    }
    first = baseline or "profile"
    order = [first] + ([n for n in everyone if n != first] if compare else [])
    return [everyone[n] for n in order]


def run_simulation(
    settings: Settings, target: TargetConfig, trace: Trace, *, baseline: Baseline | None = None,
    compare: bool = False,
) -> list[RunResult]:
    """The selected contender and, with `compare`, the others on the same plant."""
    sim = settings.simulation
    params = PlantParams(sim.capacity_per_instance, sim.startup_delay, sim.scrape_interval)
    initial = sim.initial_replicas or target.min_replicas
    return [simulate(c, trace, params, initial)
            for c in contenders_for(settings, target, trace, baseline, compare)]


def simulation_report(
    results: Sequence[RunResult], trace: Trace, target: TargetConfig, settings: Settings,
) -> dict[str, Any]:
    """The `--out` JSON: the selected run's timeline and summary, plus the comparison."""
    main = results[0]
    return {
        "trace": trace.name,
        "target": target.name,
        "contender": main.contender,
        "plant": settings.simulation.model_dump(mode="json"),
        "summary": main.summary,
        "events": main.events,
        "timeline": main.timeline,
        "comparison": [r.summary for r in results],
    }


def signal_state_counts(decisions: Sequence[Decision]) -> dict[SignalState, int]:
    counts: dict[SignalState, int] = {}
    for d in decisions:
        for p in d.policies:
            counts[p.state] = counts.get(p.state, 0) + 1
    return counts


__all__ = ["BASELINES", "RunResult", "Signal", "run_simulation", "simulation_report"]
