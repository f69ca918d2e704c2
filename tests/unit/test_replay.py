"""The simulator: the plant's physics, the scrape view, and whole runs on small traces."""

from __future__ import annotations

import pytest

from autoscaler.config import ConfigError, load_config_data
from autoscaler.model import SignalState
from autoscaler.replay.plant import Plant, PlantParams, ScrapeHistory
from autoscaler.replay.simulate import plant_signal_name, run_simulation, simulation_report
from autoscaler.trace import Trace
from policies.base import PLANT_SIGNALS

PARAMS = PlantParams(capacity_per_instance=10000, startup_delay=60, scrape_interval=15)


def steady(demand: float, hours: float = 1.0, step: float = 60.0) -> Trace:
    n = int(hours * 3600 / step) + 1
    return Trace("steady", tuple(i * step for i in range(n)), (demand,) * n)


def step_trace(low: float, high: float, at: float, hours: float = 2.0) -> Trace:
    n = int(hours * 3600 / 60) + 1
    t = tuple(i * 60.0 for i in range(n))
    return Trace("step", t, tuple(high if x >= at else low for x in t))


def settings(policies: list[dict[str, object]], initial: int | None = None,
             **target: object):  # type: ignore[no-untyped-def]
    return load_config_data({
        "evaluation_interval": "15s",
        "simulation": {"initial_replicas": initial},
        "targets": [{"name": "smtp", "backend": "swarm", "service": "s", "min_replicas": 1,
                     "max_replicas": 20, "cooldown": {"up": "0s", "down": "0s"},
                     "policies": policies, **target}],
    }, environ={})


CAPACITY = [{"type": "capacity", "query": "arrival_rate", "per_instance": 10000,
             "headroom": 1.5}]


@pytest.mark.parametrize(("replicas", "demand", "queue_after", "serving"), [
    pytest.param(2, 10000, 0.0, 2, id="under-capacity-no-queue"),
    pytest.param(1, 20000, 10000 * 0.5, 1, id="over-capacity-queue-grows"),
])
def test_plant_queue(replicas: int, demand: float, queue_after: float, serving: int) -> None:
    plant = Plant.running(PARAMS, replicas, 0.0)
    for i in range(120):  # 30 minutes in 15 s steps
        _, got_serving = plant.step(i * 15.0, 15.0, demand)
    assert plant.queue == pytest.approx(queue_after)
    assert got_serving == serving


def test_new_instances_serve_only_after_the_startup_delay() -> None:
    plant = Plant.running(PARAMS, 1, 0.0)
    plant.set_replicas(3, 100.0)
    assert (plant.replicas, plant.serving(100.0), plant.serving(159.0),
            plant.serving(160.0)) == (3, 1, 1, 3)


def test_scale_down_removes_starting_instances_first() -> None:
    plant = Plant.running(PARAMS, 2, 0.0)
    plant.set_replicas(4, 100.0)
    plant.set_replicas(2, 110.0)
    assert plant.serving(110.0) == 2


def test_scrape_history_turns_counters_into_rates_over_the_window() -> None:
    plant = Plant.running(PARAMS, 2, 0.0)
    history = ScrapeHistory(PARAMS)
    t = 0.0
    history.scrape(plant, t)
    for _ in range(40):
        plant.step(t, 15.0, 12000.0)
        t += 15.0
        history.scrape(plant, t)
    rate = history.signal("arrival_rate", t, 0.0)
    assert rate.state is SignalState.OK and rate.latest == pytest.approx(12000.0)
    cpu = history.signal("cpu", t, 0.0).latest
    assert cpu is not None and 45 < cpu < 65  # 60 % utilisation


@pytest.mark.parametrize(("name", "now", "window", "state", "count"), [
    pytest.param("queue", 150.0, 0.0, SignalState.OK, 1, id="latest-only"),
    pytest.param("queue", 150.0, 60.0, SignalState.OK, 4, id="window"),
    pytest.param("queue", 500.0, 0.0, SignalState.STALE, 0, id="stale"),
    pytest.param("cpu_typo", 150.0, 0.0, SignalState.ERROR, 0, id="unknown-signal"),
])
def test_scrape_history_signal(name: str, now: float, window: float, state: SignalState,
                               count: int) -> None:
    plant = Plant.running(PARAMS, 1, 0.0)
    history = ScrapeHistory(PARAMS)
    for i in range(11):
        history.scrape(plant, i * 15.0)
    sig = history.signal(name, now, window)
    assert (sig.state, len(sig.samples)) == (state, count)


def test_empty_before_the_first_scrape() -> None:
    history = ScrapeHistory(PARAMS)
    assert history.signal("queue", 0.0, 0.0).state is SignalState.EMPTY


@pytest.mark.parametrize(("query", "simulate_as", "expected"), [
    ("cpu", None, "cpu"), ("avg(cpu_percent)", "cpu", "cpu"), ("avg(x)", None, None),
    (" queue ", None, "queue"),
])
def test_plant_signal_name(query: str, simulate_as: str | None, expected: str | None) -> None:
    assert plant_signal_name(query, simulate_as) == expected


def test_the_plant_records_every_plant_signal_name() -> None:
    """The one list is what the plant serves: a name `simulate_as` may give always has data."""
    plant, history = Plant.running(PARAMS, 2, 0.0), ScrapeHistory(PARAMS)
    for t in range(0, 300, 15):
        plant.step(float(t), 15.0, 20000.0)
        history.scrape(plant, float(t + 15))
    assert {name: history.signal(name, 300.0, 0.0).state for name in PLANT_SIGNALS} == \
        dict.fromkeys(PLANT_SIGNALS, SignalState.OK)


@pytest.mark.parametrize(("policy", "guard", "key"), [
    pytest.param({"simulate_as": "cpuu"}, {}, "targets[0].policies[0].simulate_as",
                 id="policy-typo"),
    pytest.param({}, {"simulate_as": "cpuu"}, "targets[0].guards[0].simulate_as",
                 id="guard-typo"),
    pytest.param({"simulate_as": ""}, {}, "targets[0].policies[0].simulate_as",
                 id="policy-empty"),
])
def test_unknown_plant_signal_is_a_config_error_naming_the_key(
    policy: dict[str, object], guard: dict[str, object], key: str
) -> None:
    """Before: `simulate_as: cpuu` loaded and the whole simulation read `metric_error`."""
    with pytest.raises(ConfigError) as info:
        settings([{**CAPACITY[0], **policy}],
                 guards=[{"query": "active_deliveries", "above": 20, **guard}])
    [issue] = info.value.issues
    assert (issue.key, "arrival_rate_1m" in issue.message) == (key, True)


@pytest.mark.parametrize("name", PLANT_SIGNALS)
def test_every_plant_signal_name_loads_as_simulate_as(name: str) -> None:
    s = settings([{**CAPACITY[0], "simulate_as": name}],
                 guards=[{"query": "q", "above": 20, "simulate_as": name}])
    assert (s.targets[0].policies[0].simulate_as, s.targets[0].guards[0].simulate_as) == \
        (name, name)


def test_steady_load_settles_on_the_capacity_formula() -> None:
    s = settings(CAPACITY)
    [run] = run_simulation(s, s.targets[0], steady(50000))
    assert run.timeline[-1]["replicas"] == 8  # ceil(50000/10000 x 1.5)
    assert run.summary["overload_seconds"] > 0  # started at 1 instance


def test_a_demand_step_scales_up_then_down_after_stabilization() -> None:
    s = settings(CAPACITY)
    [run] = run_simulation(s, s.targets[0], step_trace(10000, 40000, 1800, hours=1.5))
    before = [r["replicas"] for r in run.timeline if r["t"] < 1700]
    after = [r["replicas"] for r in run.timeline if r["t"] > 3000]
    assert before[-1] == 2 and after[-1] == 6
    ups = [e for e in run.events if e["to"] > e["from"]]
    assert ups and ups[-1]["winner"] == "capacity"


def test_scale_down_waits_for_the_stabilization_window() -> None:
    s = settings(CAPACITY)
    trace = Trace("drop", tuple(float(i * 60) for i in range(61)),
                  tuple(40000.0 if i < 30 else 10000.0 for i in range(61)))
    [run] = run_simulation(s, s.targets[0], trace)
    first_down = next(e for e in run.events if e["to"] < e["from"])
    assert first_down["t"] >= 1800 + 300  # HPA default down window: 300 s


def test_every_timeline_row_has_the_contract_fields() -> None:
    s = settings(CAPACITY)
    results = run_simulation(s, s.targets[0], steady(20000, hours=0.25), compare=True)
    report = simulation_report(results, steady(20000, hours=0.25), s.targets[0], s)
    assert {"t", "demand", "replicas", "ready", "queue", "cpu"} <= set(report["timeline"][0])
    assert [c["contender"] for c in report["comparison"]] == ["profile", "hpa-cpu", "static"]


@pytest.mark.parametrize(("baseline", "check"), [
    pytest.param("static", lambda rows: {r["replicas"] for r in rows} == {8}, id="static-held"),
    pytest.param("hpa-cpu", lambda rows: rows[-1]["replicas"] > 1, id="hpa-follows-cpu"),
])
def test_baselines(baseline: str, check: object) -> None:
    s = settings(CAPACITY)
    trace = steady(50000, hours=0.5)
    [run] = run_simulation(s, s.targets[0], trace, baseline=baseline)  # type: ignore[arg-type]
    assert check(run.timeline)  # type: ignore[operator]


def test_policies_without_a_plant_signal_are_listed_not_silently_dropped() -> None:
    s = settings([*CAPACITY, {"type": "threshold", "name": "sessions",
                              "query": "avg(imap_active_connections)", "scale_up_above": 5}])
    [run] = run_simulation(s, s.targets[0], steady(10000, hours=0.1))
    assert run.not_simulated == ["sessions"]


def test_missing_data_never_scales_down_in_simulation_either() -> None:
    # capacity alone would go from 4 to 1; a policy whose signal errors holds the size. Config
    # refuses a `simulate_as` the plant has not, so the broken policy is built unvalidated.
    from dataclasses import replace

    from autoscaler.replay.simulate import profile_contender, simulate
    from policies.threshold import ThresholdPolicy

    s = settings(CAPACITY, initial=4)
    broken = ThresholdPolicy.model_construct(name="broken", query="q",
                                             simulate_as="no_such_signal",  # type: ignore[arg-type]
                                             scale_up_above=5)
    profile = profile_contender(s, s.targets[0])
    contender = replace(profile, policies=(*profile.policies, broken))
    run = simulate(contender, steady(5000, hours=0.5), PARAMS, 4)
    assert {r["replicas"] for r in run.timeline} == {4}
    assert run.clip_counts.get("metric_error", 0) > 0
    control = simulate(profile, steady(5000, hours=0.5), PARAMS, 4)
    assert control.timeline[-1]["replicas"] == 1


def test_oracles_bracket_the_contenders_on_a_step() -> None:
    from autoscaler.replay.plant import PlantParams
    from autoscaler.replay.simulate import (
        clairvoyant_oracle_contender,
        reactive_oracle_contender,
        simulate,
    )

    s = settings(CAPACITY)
    target = s.targets[0]
    trace = step_trace(10000, 40000, 1800, hours=1.0)
    params = PlantParams(10000, 60, 15)
    clair = simulate(clairvoyant_oracle_contender(target, trace, params, 15.0), trace,
                     params, 1)
    react = simulate(reactive_oracle_contender(target, trace, params, 15.0), trace, params, 1)
    assert clair.summary["overload_seconds"] == 0  # starts instances a start-up early
    assert react.summary["overload_seconds"] >= 60  # knows now, but instances take 60 s
    assert clair.timeline[-1]["replicas"] == react.timeline[-1]["replicas"] == 4
