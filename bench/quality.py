"""Control quality on every bundled trace (and any given): the Stalwart profile against the
HPA, the guide's static formula and two oracles, on one plant model.

Run: `scripts/bench quality [TRACE.csv ...]`. Writes docs/benchmarks.md (section "quality")
and one plot per trace in docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

from autoscaler.cli import bundled_config_path
from autoscaler.config import Settings, TargetConfig, load_config, load_config_data
from autoscaler.plot import plot_simulation
from autoscaler.replay.plant import PlantParams
from autoscaler.replay.simulate import (
    Contender,
    clairvoyant_oracle_contender,
    hpa_cpu_contender,
    profile_contender,
    reactive_oracle_contender,
    simulate,
    static_contender,
)
from autoscaler.trace import Trace, bundled_traces, load_trace
from bench.report import doc_path, machine, write_section

# The recurring traces of scripts/make_traces.py and their period: seasonal's goals (#10)
# are counted after the first period (before it there is nothing to learn from).
PERIODS = {"daily-digest": 86400.0, "hourly-job": 3600.0, "weekly-campaign": 604800.0}
# The recurring traces whose burst jitters by minutes (goal: <= 15 s per burst after the
# first period); the others are exact (goal: 0 s). One burst per period in each.
JITTERS = {"daily-digest"}
JITTER_GOAL = 15.0  # s of overload per burst
SIMULATE_GOAL = 10.0  # s of CPU for the profile's 14 days of weekly-campaign at 15 s
# The guide's own rules as the guide writes them (#10 item 6): CPU 70/35, capacity x1.5 on
# the 5m inflow, the queue trend, a 5-minute down cooldown; the revised threshold votes only
# what its own CPU needs beside the others; `spreads: false` is the floor it was before.
GUIDE_POLICIES: list[dict[str, Any]] = [
    {"type": "threshold", "name": "cpu", "query": "cpu", "simulate_as": "cpu",
     "scale_up_above": 70, "scale_down_below": 35},
    {"type": "capacity", "name": "inflow", "query": "inflow", "simulate_as": "arrival_rate",
     "per_instance": 10000, "headroom": 1.5},
    {"type": "queue_trend", "name": "queue", "query": "net inflow", "simulate_as": "net_inflow",
     "signal": "growth", "window": "5m"},
]


def guide_contender(settings: Settings, target: TargetConfig, name: str,
                    spreads: bool) -> Contender:
    policies = [dict(p) for p in GUIDE_POLICIES]
    policies[0]["spreads"] = spreads
    guide = load_config_data({"targets": [{
        "name": "guide", "backend": "swarm", "service": "guide",
        "min_replicas": target.min_replicas, "max_replicas": target.max_replicas,
        "cooldown": {"up": "60s", "down": "5m"}, "policies": policies}]},
        environ={}).targets[0]
    return Contender(name, tuple(guide.effective_policies()), (), guide.rules(),
                     settings.evaluation_interval)


def first_hours(trace: Trace, hours: float | None) -> Trace:
    """The trace's first `hours` (all of it when None): a quick run of every contender."""
    if hours is None:
        return trace
    cut = bisect_right(trace.t, trace.t[0] + hours * 3600.0)
    return Trace(trace.name, trace.t[:cut], trace.demand[:cut])


def run_trace(path: Path, hours: float | None = None) -> tuple[str, list[Any], float]:
    settings = load_config(bundled_config_path())
    target = settings.targets[0]
    trace = first_hours(load_trace(path), hours)
    sim = settings.simulation
    params = PlantParams(sim.capacity_per_instance, sim.startup_delay, sim.scrape_interval)
    interval = settings.evaluation_interval
    contenders = [
        profile_contender(settings, target),
        hpa_cpu_contender(target),
        static_contender(target, trace, sim.capacity_per_instance),
        guide_contender(settings, target, "guide", spreads=True),
        guide_contender(settings, target, "guide-floor", spreads=False),
        reactive_oracle_contender(target, trace, params, interval),
        clairvoyant_oracle_contender(target, trace, params, interval),
    ]
    initial = sim.initial_replicas or target.min_replicas
    started = time.process_time()
    results = [simulate(contenders[0], trace, params, initial)]
    profile_cpu = time.process_time() - started
    results += [simulate(c, trace, params, initial) for c in contenders[1:]]
    plots = doc_path().parent / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    plot_simulation(results, plots / f"quality-{trace.name}.png",
                    f"{trace.name}: all contenders, one plant")
    return trace.name, results, profile_cpu


def overload_per_period(result: Any, period: float) -> list[float]:
    """Seconds of overload in each period of the run (from its timeline: one row per
    evaluation, each standing for the interval before it)."""
    rows = result.timeline
    step = rows[1]["t"] - rows[0]["t"] if len(rows) > 1 else 0.0
    out: list[float] = []
    for row in rows:
        k = int((row["t"] - 1e-9) // period)
        out.extend([0.0] * (k + 1 - len(out)))
        if row["demand"] > row["capacity"] + 1e-9:
            out[k] += step
    return out


def seasonal_verdict(name: str, results: list[Any]) -> list[str]:
    """#10's goals on a recurring trace, for the profile (seasonal in its preset) and the
    guide's rules."""
    rows = {r.contender: r for r in results}
    clair = rows["clairvoyant-oracle"].summary["replica_hours"] or 1.0
    profile = rows["profile"]
    per = overload_per_period(profile, PERIODS[name])
    ratio = profile.summary["replica_hours"] / clair
    after = sum(per[1:])
    later = sum(per[2:])
    some = ", ".join(f"{v:.0f} s in period {k + 1}" for k, v in enumerate(per) if v > 0)
    if name in JITTERS:
        worst = max(per[1:], default=0.0)
        goal = (f"{'met' if worst <= JITTER_GOAL else 'not met'}: it jitters by minutes, goal "
                f"<= {JITTER_GOAL:g} s per burst; worst {worst:.0f} s")
    else:
        goal = f"{'met' if after == 0 else 'not met'}: an exact schedule, goal 0 s"
    return [
        f"profile overload by period ({len(per)} periods): {some or 'none'}; after the first "
        f"period {after:.0f} s ({goal}), after the second {later:.0f} s",
        f"profile replica-hours {ratio:.2f}x clairvoyant ("
        f"{'met' if ratio <= 1.2 else 'not met'}: goal <= 1.2x; stretch <= 1.15x "
        f"{'met' if ratio <= 1.15 else 'not met'})",
        *guide_verdict(rows, clair),
    ]


def guide_verdict(rows: dict[str, Any], clair: float) -> list[str]:
    g, floor = rows["guide"].summary, rows["guide-floor"].summary
    ratio = g["replica_hours"] / clair
    return [f"guide's rules {ratio:.2f}x clairvoyant ({'met' if ratio <= 1.6 else 'not met'}: "
            f"goal <= 1.6x; with the threshold's old floor {floor['replica_hours'] / clair:.2f}x"
            f"), overload {g['overload_seconds']:.0f} s ("
            f"{'<=' if g['overload_seconds'] <= floor['overload_seconds'] else '>'} "
            f"{floor['overload_seconds']:.0f} s with the old floor)"]


def simulate_verdict(cpu: float | None) -> str:
    """Whether simulate's own cost on the 14-day trace met its goal (None: not judged, the
    trace was not run whole)."""
    if cpu is None:
        return "not judged: the trace was not run whole"
    return f"{'met' if cpu < SIMULATE_GOAL else 'not met'}, {cpu:.1f} s"


def verdict(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The goals of the benchmark issue, checked for the profile."""
    p, h, c = rows["profile"], rows["hpa-cpu"], rows["clairvoyant-oracle"]
    ratio = p["replica_hours"] / c["replica_hours"] if c["replica_hours"] else float("inf")
    return [
        f"overload {'<=' if p['overload_seconds'] <= h['overload_seconds'] else '>'} hpa-cpu "
        f"({p['overload_seconds']:.0f} vs {h['overload_seconds']:.0f} s)",
        f"replica-hours {ratio:.2f}x clairvoyant ({'met' if ratio <= 1.25 else 'not met'}: "
        "goal <= 1.25x)",
        f"scale events {'<=' if p['scale_events'] <= h['scale_events'] else '>'} hpa-cpu "
        f"({p['scale_events']} vs {h['scale_events']})",
    ]


def summary_row(name: str, rows: dict[str, dict[str, Any]]) -> str:
    """One line per trace: the profile's three figures beside hpa-cpu's, and how many goals."""
    p, h, c = rows["profile"], rows["hpa-cpu"], rows["clairvoyant-oracle"]
    clair = c["replica_hours"] or 1.0
    ratio, h_ratio = p["replica_hours"] / clair, h["replica_hours"] / clair
    met = sum((p["overload_seconds"] <= h["overload_seconds"], ratio <= 1.25,
               p["scale_events"] <= h["scale_events"]))
    return (f"| {name} | {p['overload_seconds']:.0f} ({h['overload_seconds']:.0f}) | "
            f"{ratio:.2f} ({h_ratio:.2f}) | {p['scale_events']} ({h['scale_events']}) | "
            f"{met} of 3 |")


READING = """\
Reading: the profile sizes for the inflow expected 90 s ahead (start-up delay plus the lag
of a 1m rate), so its headroom covers noise only: 1.1 instead of the guide's 1.5, which
alone costs 1.35-1.6x the clairvoyant oracle. Before this profile (capacity on the 5m rate x
1.5, a community net-inflow queue policy, CPU > 70 %, scale-down 1 pod per 2 min after a 5
min cooldown) the figures were: diurnal-week 1.29x, 0 s, 92 events; newsletter-burst 2.18x,
405 s, 38 events; noisy-flat 1.43x, 420 s, 41 events; slow-ramp 1.38x, 0 s, 6 events. What
each change bought, measured on all four traces: the 1m rate and its trend answer a burst
earlier than the 5m rate did (newsletter-burst: 300 s of overload instead of 405 s); sizing
down in one step after a 10 min window, instead of 1 pod per 2 min behind a 5 min cooldown,
gave back the hour of idle nodes after each burst; dropping the community net-inflow queue
policy (two 5m rates averaged over 5m: it read "growing" for minutes after capacity had
caught up and added 4 instances a burst no longer needed); raising the profile's CPU rule
from 70 % to a 90 % backstop (at headroom 1.1 nodes run ~90 % busy, and a 70 % rule added an
instance the forecast then took back: 644 events on diurnal-week at headroom 1.2); the
hysteresis (a scale-down must leave 0.1 of an instance spare) stopped flapping at a boundary
on slow ramps (without it: more events and 660 s of overload on noisy-flat); the 30 s
scale-up window ignores the shortest spikes.

What still falls short, and why. newsletter-burst: a step of 4.5x within a minute is
extrapolated as a line, so the forecast overshoots while the 1m rate climbs, and the CPU
backstop adds one or two more while the backlog drains; the 10 min scale-down window then
holds that peak; and on each burst's tail (18,000-20,000/h) headroom 1.1 asks for 3
instances where the oracle keeps 2. noisy-flat: demand is flat with +/-20-30 % noise and
15-60 s spikes of up to 2x that no start-up delay of 60 s can follow, so overload is bought
only with standing spare capacity. Every variant measured lies on one overload/cost frontier
with hpa-cpu (585 s at 1.33x): this profile 555 s at 1.38x; at hysteresis 0.2, lead 120 s
435 s at 1.48x, lead 90 s 540 s at 1.39x, lead 60 s 630 s at 1.30x, lead 45 s 720 s at
1.27x; a 5 min scale-down window 705-810 s at 1.23-1.30x; sizing for the mean plus 1-2
standard deviations of the recent 1m rate instead of a fixed headroom landed on the same
frontier (585-780 s at 1.23-1.40x). None met both overload <= hpa-cpu and <= 1.25x, so the
profile keeps a point with less overload than hpa-cpu (the goal ranked first) and the cost
is reported as it is. A fixed count shows the bound: 5 instances held throughout would give
300 s at 1.35x, 4 held 675 s at 1.08x. Meeting both would need to know which minutes bring a
spike before they come, which this trace's noise does not tell.
"""


def load() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


BEFORE = """\
Before seasonal joined the preset (the figures this section recorded then, same plant and
profile otherwise), profile overload s / replica-h / x clairvoyant: daily-digest 1050 /
350.0 / 1.03; diurnal-week 0 / 501.2 / 1.09; hourly-job 7200 / 194.3 / 1.53;
newsletter-burst 300 / 18.0 / 1.27; noisy-flat 555 / 30.9 / 1.38; slow-ramp 0 / 54.4 /
1.09; weekly-campaign 300 / 682.5 / 1.01. On the four older traces `seasonal` says "no
opinion" (noisy-flat and slow-ramp: on every tick, asserted in
tests/unit/test_seasonal_replay.py), so their figures are unchanged.

The prompt come-down after a predicted burst, alone (this profile with the let-go of a
predicted burst's asks turned off, then on; measured by simulate): hourly-job 188.4 ->
148.4 replica-h, 300 s overload both (while the job runs, the reactive policies' overshoot
on its step (47,000/h rising 1,300,000/h per hour -> 79,000/h in 90 s: 8 instances) is held
only at the 6 asked for the job; at its predicted end the count comes down at once instead
of holding the peak 10 min); daily-digest 351.4 -> 349.4, 300 s both; weekly-campaign
683.1 -> 683.1 (no campaign predicted yet: see below).

Before a burst's first repeat could act (the bar alone: seasonal acted from a burst's third
occurrence), profile overload s / replica-h: daily-digest 300 / 349.4, hourly-job 300 /
148.4, weekly-campaign 300 / 683.1. Now an unblemished period (it made forecasts and since
its history began never missed a burst nor forecast one that did not come) acts at the
first repeat, raising up to phase_window before the onset it saw: daily-digest 15 s on day 2
(its digest came 6 min before day 1's, more than the 5 min a first repeat allows) and 0 s
after; hourly-job and weekly-campaign 0 s from the second occurrence. Its cost: a burst in
a period's first period of history is not yet in that period's record, so it may forecast it
once more (weekly-campaign: the first campaign came in the trace's first day, and the daily
period raised for it once on day 2: +1.4 of 684.5 replica-h); a one-off after a period's
history began is a miss in its record and is never repeated (newsletter-burst: unchanged).

What is not met, and why. hourly-job: 1.17x, not the stretch 1.15x: headroom 1.1 asks 6
where the oracle keeps 5 (48,000/h) for the job's 10 minutes. The guide's rules (item 6 of
the issue) stay over 1.6x on hourly-job (1.66x). One hour of it (hour 10, the votes of each
tick): the job's 10 minutes reach 10 instances (CPU pegged at 95 % asks +1 a minute while
the 5m rate lags); after the job the threshold votes ceil(10 x 16 / 63) = 3 at once, but the
capacity rule's 5m rate asks 8, 7, 6, 5, 4 over the next 5 minutes, the 5-minute scale-down
stabilization holds the highest of those, and the 5-minute down cooldown after each step
makes it 10 -> 9 -> 6 -> 3 over 12 minutes; between jobs the threshold keeps 3 where the
capacity rule asks 2 (ceil(3 x 42.5 / 63) = 3: at 2 its CPU, spread evenly, would read
64 %, over the 63 % its margin sizes for). Changed one at a time: 1.37x without the
stabilization, 1.51x without the down cooldown, 1.61x at margin 0.05 and 1.58x at margin 0
(sizing on the bound itself, overload 10,020 s); the first two would no longer be the
guide's rules, and the margin is the point inside the band the issue asks the threshold to
size for. Their overload on hourly-job and newsletter-burst is above the old floor's:
the floor's slow descent left one more instance idle when the next burst came (accidental
pre-warming at 2.16x / 2.08x the oracle); meeting both needs to know that the burst is
coming, which is seasonal's job (the profile's figures above). Simulate of 14 days: the
profile's CPU time above (goal: under 10 s). It depends on the machine and on what else
runs: the last recorded figure, 14.1 s, was read on another machine (an Intel Xeon, where
other work ran beside it); on this one, idle, the same engine took 6.7-7.0 s, and building
the decision's value types as plain slotted dataclasses (frozen to mypy only) instead of
frozen ones took it to 6.2-6.6 s: their construction was 11 % of a tick, the rest of the
profile is flat (the policies ~45 %, `decide` ~20 %, the plant and its scrapes ~15 %)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("traces", nargs="*", type=Path, help="extra trace CSVs")
    parser.add_argument("--hours", type=float, default=None,
                        help="replay only each trace's first HOURS (a quick run; the figures "
                             "are then not the goals' figures)")
    args = parser.parse_args()
    paths = list(bundled_traces().values()) + list(args.traces)
    lines = [
        "## Control quality",
        "",
        f"Machine: {machine()}. Command: `scripts/bench quality`. Plant: the bundled example's",
        "`simulation` block (10,000 emails/h per instance, 60 s start-up, 15 s scrape); target",
        "`smtp` of the bundled example (preset stalwart-smtp, min 2, max 20): the `forecast`",
        "policy on the 1m inflow rate (trend over 2m, 90 s ahead, headroom 1.1, hysteresis 0.1),",
        "a 90 % CPU backstop, `seasonal` on the same inflow (150 s ahead, headroom 1.1), the",
        "deliveries guard; scale-down to the highest size asked in the last 10 min (a predicted",
        "burst's asks let go once it is over), scale-up ignoring spikes under 30 s, 60 s up",
        "cooldown. `guide`: the guide's rules as written (CPU 70/35, capacity x1.5 on the 5m",
        "inflow, queue trend, 5 min down cooldown), `guide-floor` the same with the threshold's",
        "old floor (`spreads: false`). Oracles respect",
        "the same bounds. Every contender starts at min_replicas, so a trace whose first",
        "minute needs more shows some overload even for the clairvoyant oracle.",
        "Deterministic: one run is the figure. Goals (benchmark issue): overload <= hpa-cpu,",
        "replica-hours <= 1.25x clairvoyant, scale events <= hpa-cpu.",
        "",
        *([f"**A quick run: each trace's first {args.hours:g} h only (`--hours`); not the "
           "goals' figures.**", ""] if args.hours is not None else []),
    ]
    summary: list[str] = []
    cpu: dict[str, float] = {}
    for path in paths:
        name, results, cpu[name] = run_trace(path, args.hours)
        rows = {r.contender: r.summary for r in results}
        summary.append(summary_row(name, rows))
        clair = rows["clairvoyant-oracle"]["replica_hours"] or 1.0
        lines += [f"### {name}", "",
                  "| contender | overload s | peak backlog | worst delay s | replica-h | "
                  "x clairvoyant | scale events |", "|---|---|---|---|---|---|---|"]
        for r in results:
            s = r.summary
            delay = s["worst_queue_delay_seconds"]
            lines.append(
                f"| {r.contender} | {s['overload_seconds']:.0f} | {s['peak_queue']:.0f} | "
                f"{'inf' if delay is None else f'{delay:.0f}'} | {s['replica_hours']:.1f} | "
                f"{s['replica_hours'] / clair:.2f} | {s['scale_events']} |")
        extra = (seasonal_verdict(name, results) if name in PERIODS
                 else guide_verdict({r.contender: r for r in results}, clair)
                 if name == "newsletter-burst" else [])
        lines += ["", *[f"- {v}" for v in (*verdict(rows), *extra)], "",
                  f"![{name}](benchmarks/quality-{name}.png)", ""]
        print("\n".join(lines[-(len(results) + 8):]))
    lines += ["### Profile against the goals", "",
              "| trace | overload s (hpa-cpu) | x clairvoyant (hpa-cpu) | scale events (hpa-cpu) "
              "| goals met |", "|---|---|---|---|---|", *summary, "",
              "Simulate's own cost, the profile's run (process CPU time; "
              f"load average {load()} during the run, other work shares the machine): "
              + ", ".join(f"{n} {v:.1f} s" for n, v in cpu.items())
              + f" (goal: 14 days at 15 s, weekly-campaign, under {SIMULATE_GOAL:.0f} s: "
              + simulate_verdict(None if args.hours else cpu.get("weekly-campaign"))
              + ").", "",
              BEFORE, "", READING]
    write_section("quality", "\n".join(lines))


if __name__ == "__main__":
    main()
