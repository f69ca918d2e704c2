"""Engine.reload and the SIGHUP path on fakes: which targets keep their state, what a removed
target leaves behind, the Prometheus source swap, dry-run toggles, that a reload never runs
inside a tick, that an invalid file changes nothing, and the scheduler's new interval.

The same on real components (`autoscaler run` as a process) is tests/integration/test_reload.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.actuators.base import Actuator
from autoscaler.actuators.factory import DryRunActuator
from autoscaler.config import PrometheusConfig, Settings, TargetConfig, load_config_data
from autoscaler.loop import Engine, TargetOutcome, reload_config
from autoscaler.model import ClipKind, Sample, Signal, SignalRequest, TargetState, TargetStatus
from autoscaler.reload import plan_reload
from autoscaler.scheduler import run_forever
from autoscaler.sources.base import OnSignals, SignalSource
from autoscaler.telemetry import IDENTITY, NAMESPACE, Telemetry

DEADLINE = 30.0  # generous: only for threads to get scheduled
PROM = {"url": "http://127.0.0.1:9", "timeout": "1s"}


# --------------------------------------------------------------------------- fakes


class FakeSource(SignalSource):
    """Answers every query from `values` (query -> value); counts closes."""

    def __init__(self, values: dict[str, float], config: PrometheusConfig | None = None) -> None:
        self.values = values
        self.config = config
        self.closed = 0
        self.gate: threading.Event | None = None  # when set by a test, read() waits for it
        self.reading = threading.Event()

    def read(self, requests: Sequence[SignalRequest], now: float, deadline: float,
             on_signals: OnSignals | None = None) -> dict[str, Signal]:
        self.reading.set()
        if self.gate is not None:
            self.gate.wait(DEADLINE)
        return {r.key: Signal.ok((Sample(now, self.values[r.query]),)) for r in requests}

    def check_reachable(self, deadline: float) -> str | None:
        return None

    def close(self) -> None:
        self.closed += 1


class FakeActuator(Actuator):
    """A workload in memory: spec replicas and the state written with them."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.state = TargetState()
        self.writes: list[int] = []

    @property
    def description(self) -> str:
        return "fake"

    def status(self) -> TargetStatus:
        return TargetStatus(self.replicas, self.replicas, self.state)

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        self.replicas, self.state = replicas, state
        self.writes.append(replicas)


class Backend:
    """Fake workloads by service name, created on first use at `initial` replicas."""

    def __init__(self, initial: int = 3) -> None:
        self.initial = initial
        self.workloads: dict[str, FakeActuator] = {}
        self.built: list[str] = []

    def factory(self, target: TargetConfig) -> FakeActuator:
        self.built.append(target.name)
        return self.workloads.setdefault(str(target.service), FakeActuator(self.initial))


# --------------------------------------------------------------------------- config


def target(name: str, *, service: str | None = None, query: str = "load_a",
           max_replicas: int = 3, **extra: Any) -> dict[str, Any]:
    """A swarm target whose capacity policy asks ceil(value / 10000 x 1.5) replicas, with a
    long scale-down stabilization window: what it remembers decides a scale-down."""
    return {"name": name, "backend": "swarm", "service": service or name,
            "min_replicas": 1, "max_replicas": max_replicas,
            "cooldown": {"up": "0s", "down": "0s"},
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
            "policies": [{"type": "capacity", "name": "inflow", "query": query,
                          "per_instance": 10000, "headroom": 1.5}], **extra}


def settings(*targets: dict[str, Any], **extra: Any) -> Settings:
    data = {"evaluation_interval": "1s", "prometheus": PROM, "targets": list(targets), **extra}
    return load_config_data(data, environ={})


VALUES = {"load_a": 40000.0, "load_b": 10000.0}  # asks 6 (clamped to 3) and 2


def engine_for(cfg: Settings, backend: Backend, source: FakeSource | None = None,
               **kwargs: Any) -> Engine:
    return Engine(cfg, source=source or FakeSource(dict(VALUES)),
                  actuator_factory=backend.factory, telemetry=Telemetry(), **kwargs)


def one(outcomes: list[TargetOutcome], name: str) -> TargetOutcome:
    return next(o for o in outcomes if o.target == name)


def sample(engine: Engine, name: str, **labels: str) -> float | None:
    """The sample of `name` with exactly `labels` besides the identity labels (namespace,
    kind, workload, service: tests/integration/test_metric_labels.py checks them)."""
    for metric in engine.telemetry.registry.collect():
        for s in metric.samples:
            if s.name == f"{NAMESPACE}_{name}" and {
                    k: v for k, v in s.labels.items() if k not in IDENTITY} == labels:
                return float(s.value)
    return None


# --------------------------------------------------------------------------- state


def test_a_kept_target_keeps_its_stabilization_memory_a_fresh_one_has_none() -> None:
    """`a` saw a recommendation of 6 (clamped to max 3, so never written to the target);
    after the reload both targets recommend 2: `a` holds 3 from memory (its 6 is still
    there), the new `b` (same policy, same replicas, no memory) holds 3 from its first sight
    only: as the HPA, a target's first tick in a process starts its history with (now,
    current) (#11 item 5), so a new or restarted target never scales down at once."""
    backend = Backend(initial=3)
    engine = engine_for(settings(target("a")), backend)
    first = one(engine.tick(), "a")
    assert first.decision is not None and first.decision.desired == 3
    assert backend.workloads["a"].writes == []  # nothing of the 6 reached the target
    runtime = engine.runtimes[0]

    summary = engine.reload(settings(target("a", query="load_b"), target("b", query="load_b")))
    assert (summary.kept, summary.added, summary.removed) == (("a",), ("b",), ())
    assert engine.runtimes[0] is runtime  # same object: state, actuator, HPA check kept
    assert runtime.state is not None and (first.decision.time, 6) in runtime.state.recommendations

    outcomes = engine.tick()
    a, b = one(outcomes, "a").decision, one(outcomes, "b").decision
    assert a is not None and b is not None
    assert (a.recommended, a.desired) == (2, 3)
    assert ClipKind.STABILIZATION in {c.kind for c in a.clips}
    assert (b.recommended, b.desired) == (2, 3)
    assert b.state.recommendations[0] == (b.time, 3)  # its first sight
    assert backend.workloads["a"].writes == [] and backend.workloads["b"].writes == []
    assert backend.built == ["a", "b"]  # `a`'s actuator was not rebuilt
    engine.close()


@pytest.mark.parametrize(("change", "kept", "added", "removed", "replaced"), [
    ({"max_replicas": 5}, ("a",), (), (), ()),
    ({"query": "load_b"}, ("a",), (), (), ()),
    ({"dry_run": True}, ("a",), (), (), ()),
    ({"service": "other"}, (), (), (), ("a",)),  # another workload: its state is not a's
    ({"name": "renamed"}, (), ("renamed",), ("a",), ()),
])
def test_which_changes_keep_a_targets_state(change: dict[str, Any], kept: tuple[str, ...],
                                            added: tuple[str, ...], removed: tuple[str, ...],
                                            replaced: tuple[str, ...]) -> None:
    backend = Backend()
    engine = engine_for(settings(target("a")), backend)
    engine.tick()
    before = engine.runtimes[0]
    change = dict(change)
    name = change.pop("name", "a")
    summary = engine.reload(settings(target(name, **change)))
    assert (summary.kept, summary.added, summary.removed, summary.replaced) == (
        kept, added, removed, replaced)
    assert (engine.runtimes[0] is before) is bool(kept)
    assert engine.runtimes[0].state is (before.state if kept else None)
    engine.close()


def test_new_policies_bounds_and_rules_apply_at_the_next_tick() -> None:
    engine = engine_for(settings(target("a", max_replicas=3)), Backend(initial=3))
    assert one(engine.tick(), "a").decision.desired == 3  # type: ignore[union-attr]
    engine.reload(settings(target("a", max_replicas=5)))
    decision = one(engine.tick(), "a").decision
    assert decision is not None and decision.desired == 5  # asked 6, now clamped to 5
    assert sample(engine, "target_max_replicas", target="a") == 5
    engine.close()


def test_a_removed_target_is_dropped_and_its_series_forgotten() -> None:
    engine = engine_for(settings(target("a"), target("b", query="load_b")), Backend())
    engine.tick()
    # b asks 2 and holds 3: its first sight starts its 600 s window with (now, 3)
    assert sample(engine, "target_desired_replicas", target="b") == 3
    assert sample(engine, "policy_value", target="b", policy="inflow") == 10000.0

    summary = engine.reload(settings(target("a")))
    assert summary.removed == ("b",)
    assert [rt.name for rt in engine.runtimes] == ["a"]
    assert [o.target for o in engine.tick()] == ["a"]
    stale = [s.name for family in engine.telemetry.registry.collect()
             if family.type == "gauge" for s in family.samples if s.labels.get("target") == "b"]
    assert stale == []  # counters may stay (cumulative); no gauge of b shows a stale value
    assert sample(engine, "target_desired_replicas", target="a") == 3
    engine.close()


def test_a_removed_policy_loses_its_series_the_target_keeps_the_rest() -> None:
    two = target("a")
    two["policies"].append({"type": "threshold", "name": "cpu", "query": "load_b",
                            "scale_up_above": 1e9, "scale_down_below": 0})
    engine = engine_for(settings(two), Backend())
    engine.tick()
    assert sample(engine, "policy_value", target="a", policy="cpu") == 10000.0
    engine.reload(settings(target("a")))
    assert sample(engine, "policy_value", target="a", policy="cpu") is None
    assert sample(engine, "signal_state", target="a", policy="cpu", state="ok") is None
    assert sample(engine, "policy_value", target="a", policy="inflow") == 40000.0
    engine.close()


# --------------------------------------------------------------------------- source, dry-run


@pytest.mark.parametrize(("prometheus", "swapped"), [
    (PROM, False),
    ({**PROM, "timeout": "2s"}, True),
    ({**PROM, "url": "http://127.0.0.1:10"}, True),
])
def test_the_prometheus_source_is_replaced_only_when_its_block_changes(
        prometheus: dict[str, Any], swapped: bool) -> None:
    built: list[FakeSource] = []

    def source_factory(config: PrometheusConfig) -> FakeSource:
        built.append(FakeSource(dict(VALUES), config))
        return built[-1]

    first = FakeSource(dict(VALUES))
    engine = engine_for(settings(target("a")), Backend(), first, source_factory=source_factory)
    summary = engine.reload(settings(target("a"), prometheus=prometheus))
    assert summary.prometheus_changed is swapped
    assert (engine.source is not first) is swapped
    assert first.closed == (1 if swapped else 0)
    if swapped:
        assert built[0].config == engine.settings.prometheus
        assert one(engine.tick(), "a").decision is not None  # ticks on the new source
    engine.close()


def test_a_source_that_cannot_be_built_changes_nothing(tmp_path: Path) -> None:
    def broken(config: PrometheusConfig) -> FakeSource:
        raise ValueError("no such CA file")

    engine = engine_for(settings(target("a")), Backend(), source_factory=broken)
    old_settings, old_source = engine.settings, engine.source
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"prometheus": {**PROM, "timeout": "2s"},
                                    "targets": [target("a"), target("b")]}))
    assert reload_config(engine, path) is False
    assert engine.settings is old_settings and engine.source is old_source
    assert [rt.name for rt in engine.runtimes] == ["a"]
    assert sample(engine, "config_reload_failures_total") == 1
    engine.close()


@pytest.mark.parametrize(("before", "after", "wrapped", "writes"), [
    (True, False, False, [2]),  # dry-run turned off: the next decision is really written
    (False, True, True, []),  # turned on: nothing more is written
    (True, True, True, []),
])
def test_a_dry_run_toggle_applies_to_kept_and_new_actuators(
        before: bool, after: bool, wrapped: bool, writes: list[int]) -> None:
    backend = Backend(initial=3)

    def factory(t: TargetConfig) -> Any:  # as the CLI's: wraps from the start-up config
        inner = backend.factory(t)
        return DryRunActuator(inner) if before else inner

    no_window = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    engine = Engine(settings(target("a", behavior=no_window), dry_run=before),
                    source=FakeSource(dict(VALUES)), actuator_factory=factory,
                    telemetry=Telemetry())
    assert one(engine.tick(), "a").decision.desired == 3  # type: ignore[union-attr]
    engine.reload(settings(target("a", query="load_b", behavior=no_window),
                           target("b", query="load_b", behavior=no_window), dry_run=after))
    outcomes = engine.tick()
    for rt in engine.runtimes:  # `a` kept from before, `b` built after the reload
        assert isinstance(rt.actuator, DryRunActuator) is wrapped, rt.name
        assert backend.workloads[rt.name].writes == writes, rt.name
        assert one(outcomes, rt.name).written is bool(writes), rt.name
    engine.close()


# --------------------------------------------------------------------------- concurrency


def test_a_reload_waits_for_the_tick_in_flight() -> None:
    source = FakeSource(dict(VALUES))
    source.gate = threading.Event()
    engine = engine_for(settings(target("a")), Backend(), source)
    ticking = threading.Thread(target=engine.tick)
    ticking.start()
    assert source.reading.wait(DEADLINE)  # the tick is inside, reading signals
    reloaded = threading.Event()

    def reload() -> None:
        engine.reload(settings(target("a"), target("b")))
        reloaded.set()

    reloader = threading.Thread(target=reload)
    reloader.start()
    assert not reloaded.wait(0.5)  # held back by the tick lock
    assert [rt.name for rt in engine.runtimes] == ["a"]
    source.gate.set()
    ticking.join(DEADLINE)
    assert reloaded.wait(DEADLINE)
    reloader.join(DEADLINE)
    assert [rt.name for rt in engine.runtimes] == ["a", "b"]
    engine.close()


def test_a_reload_behind_a_stuck_tick_gives_up_and_changes_nothing() -> None:
    built: list[FakeSource] = []

    def source_factory(config: PrometheusConfig) -> FakeSource:
        built.append(FakeSource(dict(VALUES), config))
        return built[-1]

    source = FakeSource(dict(VALUES))
    source.gate = threading.Event()
    engine = engine_for(settings(target("a")), Backend(), source, source_factory=source_factory)
    ticking = threading.Thread(target=engine.tick)
    ticking.start()
    try:
        assert source.reading.wait(DEADLINE)
        old = engine.settings
        with pytest.raises(TimeoutError, match="the config was not applied"):
            engine.reload(settings(target("a"), target("b"), prometheus={**PROM, "timeout": "2s"}),
                          wait=0.2)
        assert engine.settings is old and engine.source is source
        assert [rt.name for rt in engine.runtimes] == ["a"]
        assert [b.closed for b in built] == [1]  # the unused new source is not leaked
    finally:
        source.gate.set()
        ticking.join(DEADLINE)
        engine.close()


# --------------------------------------------------------------------------- SIGHUP path


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


INVALID = """\
evaluation_interval: 1s
prometheus: {url: http://127.0.0.1:9, timeout: 1s}
targets:
  - name: a
    backend: swarm
    service: a
    min_replicas: 5
    max_replicas: 3
    policies:
      - {type: capacity, name: inflow, query: load_a, per_instance: 10000}
    colldown: {up: 0s}
  - name: c
    backend: swarm
    service: c
    max_replicas: many
    policies:
      - {type: capacity, query: load_a}
"""


def test_an_invalid_file_is_rejected_every_issue_logged_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_for(settings(target("a")), Backend())
    path = tmp_path / "config.yaml"
    path.write_text(INVALID)
    old = engine.settings
    caplog.set_level(logging.INFO, "autoscaler")
    assert reload_config(engine, path) is False
    rejected = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("config reload rejected: ")]
    assert len(rejected) == 3, rejected
    for line, key in ((7, "targets[0].min_replicas"), (11, "targets[0].colldown"),
                      (15, "targets[1].max_replicas")):
        assert any(f"{path}:{line}: {key}: " in m for m in rejected), (line, key, rejected)
    assert engine.settings is old
    assert sample(engine, "config_reload_failures_total") == 1
    assert one(engine.tick(), "a").decision is not None  # the old config keeps running

    write(path, {"evaluation_interval": "1s", "prometheus": PROM,
                 "targets": [target("a"), target("b")]})
    assert reload_config(engine, path) is True
    assert [rt.name for rt in engine.runtimes] == ["a", "b"]
    assert sample(engine, "config_reload_failures_total") == 1
    assert any("config reloaded from" in r.getMessage() and "added: b" in r.getMessage()
               for r in caplog.records)
    engine.close()


@pytest.mark.parametrize(("change", "needs_restart"), [
    ({"listen": "127.0.0.1:9999"}, ("listen",)),
    ({"leader_election": {"mode": "swarm"}}, ("leader_election",)),
    ({"evaluation_interval": "5s"}, ()),
])
def test_keys_only_a_restart_applies_are_named(change: dict[str, Any],
                                               needs_restart: tuple[str, ...]) -> None:
    engine = engine_for(settings(target("a")), Backend())
    summary = engine.reload(settings(target("a"), **change))
    assert summary.needs_restart == needs_restart
    if needs_restart:
        assert "unchanged until a restart" in summary.describe()
    engine.close()


def test_run_forever_reschedules_on_a_new_interval_and_calls_on_tick() -> None:
    """The first interval (an hour) would allow one tick only; the reload's 0.05 s brings
    the next ones."""
    engine = engine_for(settings(target("a")), Backend())
    stop, wake = threading.Event(), threading.Event()
    ticked: list[int] = []
    wakes: list[float] = []

    def on_wake() -> float:
        wakes.append(time.monotonic())
        engine.reload(settings(target("a"), evaluation_interval="0.05s"))
        return engine.settings.evaluation_interval

    thread = threading.Thread(target=run_forever, args=(engine, 3600.0, stop),
                              kwargs={"wake": wake, "on_wake": on_wake,
                                      "on_tick": lambda outcomes: ticked.append(len(outcomes))})
    thread.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while not ticked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ticked == [1]
        time.sleep(0.3)
        assert ticked == [1]  # an hour to the next one
        wake.set()
        while len(ticked) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ticked) >= 4 and len(wakes) == 1
        assert engine.health.interval == engine.tick_budget() + 2.0  # sized from the budget
    finally:
        stop.set()
        wake.set()
        thread.join(DEADLINE)
        engine.close()
    assert not thread.is_alive()


def test_a_stuck_tick_gets_no_watchdog_ping() -> None:
    """The ping follows a completed tick: a tick that hangs leaves systemd without one."""
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        def tick(self) -> list[TargetOutcome]:
            entered.set()
            release.wait(DEADLINE)
            return []

    pings: list[int] = []
    stop = threading.Event()
    stuck: Any = Stuck()
    thread = threading.Thread(target=run_forever, args=(stuck, 0.05, stop),
                              kwargs={"on_tick": lambda outcomes: pings.append(len(outcomes))})
    thread.start()
    try:
        assert entered.wait(DEADLINE)
        time.sleep(0.5)  # ten intervals
        assert pings == []
        release.set()
        deadline = time.monotonic() + DEADLINE
        while not pings and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pings
    finally:
        release.set()
        stop.set()
        thread.join(DEADLINE)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- plan_reload (pure)


@pytest.mark.parametrize(("old", "new", "keep", "dropped", "lists"), [
    pytest.param(["a"], ["a"], (0,), (), (("a",), (), (), ()), id="same"),
    pytest.param(["a", "b"], ["b", "a"], (1, 0), (), (("b", "a"), (), (), ()),
                 id="reordered-each-keeps-its-own"),
    pytest.param(["a"], ["a", "b"], (0, None), (), (("a",), ("b",), (), ()), id="added"),
    pytest.param(["a", "b"], ["b"], (1,), (0,), (("b",), (), ("a",), ()), id="removed"),
    pytest.param(["a"], ["a@other"], (None,), (0,), ((), (), (), ("a",)),
                 id="same-name-other-workload-replaced"),
    pytest.param(["a"], ["z"], (None,), (0,), ((), ("z",), ("a",), ()), id="renamed"),
    pytest.param(["c", "b", "a"], ["b"], (1,), (0, 2), (("b",), (), ("a", "c"), ()),
                 id="removed-sorted-by-name"),
])
def test_plan_reload(old: list[str], new: list[str], keep: tuple[int | None, ...],
                     dropped: tuple[int, ...],
                     lists: tuple[tuple[str, ...], ...]) -> None:
    """A target keeps its runtime when its name and workload are unchanged ("name@service")."""
    def cfg(names: list[str]) -> Settings:
        return settings(*(target(n.split("@")[0], service=n.split("@")[-1]) for n in names))

    plan = plan_reload(cfg(old), cfg(new))
    s = plan.summary
    assert (plan.keep, plan.dropped) == (keep, dropped)
    assert (s.kept, s.added, s.removed, s.replaced) == lists
    assert not s.prometheus_changed and not s.needs_restart
