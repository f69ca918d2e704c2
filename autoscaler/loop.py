"""The engine: one tick evaluates every target concurrently, each against the tick's deadline.

Per target: read the status, merge the state kept on the target with what this process
remembers, take its signals, then the write protocol (`autoscaler.write`: decide, write
replicas + state in one update when the write gate allows, conflict retry), and record the
decision (JSON log line, metrics, Kubernetes event). A slow or failing target never delays
the others: each runs in its own thread against a shared tick deadline, and an error is that
target's alone. The signals
of all targets are read in ONE batch per tick (`SignalSource.read`, in a thread of its own,
started before the targets' status reads): the source can then send identical queries once
and group queries that differ only by a target label.
A reload (SIGHUP, `Engine.reload`) swaps the config between two ticks and keeps the state of
every target it still names (which ones: `autoscaler.reload.plan_reload`). The schedule is
`autoscaler.scheduler`, the log format `autoscaler.logs`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from autoscaler.actuators.base import Actuator, ActuatorError
from autoscaler.config import (
    ConfigError,
    GuardConfig,
    PrometheusConfig,
    Settings,
    TargetConfig,
    load_config,
)
from autoscaler.decide import clamp_to_bounds
from autoscaler.evaluate import Unreported, evaluate, note_unreported
from autoscaler.leader import Leadership, NoElection
from autoscaler.logs import decision_log
from autoscaler.model import (
    ClipKind,
    Decision,
    Outcome,
    Signal,
    SignalKind,
    SignalRequest,
    SignalState,
    TargetState,
    TargetStatus,
)
from autoscaler.reload import ReloadSummary, plan_reload
from autoscaler.sources.base import SignalSource
from autoscaler.state import first_sight, merge_states, remembered_for
from autoscaler.telemetry import Health, Telemetry
from autoscaler.write import (
    WriteOutcome,
    WriteResult,
    is_dry_run,
    write_gate,
    write_target,
)
from policies import Policy
from policies.base import HISTORY_STEP

log = logging.getLogger("autoscaler.loop")
T = TypeVar("T")


ActuatorFactory = Callable[[TargetConfig], Actuator]
SourceFactory = Callable[[PrometheusConfig], SignalSource]


@dataclass
class TargetRuntime:
    """A configured target and what the loop remembers about it between ticks."""

    config: TargetConfig
    policies: list[Policy]
    guards: list[GuardConfig]
    dry_run: bool
    actuator: Actuator | None = None
    state: TargetState | None = None  # merged with the target's own at every tick
    uid: str = ""  # of the object `state` is about: a recreated one starts afresh
    refused: str | None = None  # why not to write while it lasts (an HPA scales it)
    pause_problem: str = ""  # an unreadable paused-replicas value (warned once while it lasts)
    in_flight: Future[TargetOutcome] | None = None  # a run that outlived its tick (hung backend)
    # policy label -> when its last gap in data ended (no scale-down on it while settling)
    last_unreported: Unreported = field(default_factory=Unreported)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class TargetOutcome:
    """What one tick did for one target."""

    target: str
    decision: Decision | None = None
    written: bool = False
    skipped: str = ""
    error: str | None = None
    refused: str | None = None  # another autoscaler scales it: read, never written
    signals: dict[str, Signal] = field(default_factory=dict)


def signal_key(target: str, kind: str, label: str) -> str:
    return f"{target}\x1f{kind}\x1f{label}"


def with_history(live: Signal, past: Signal | None) -> Signal:
    """A learning policy's signal: its live read with the history read's past attached
    (None, and why, while that loads or after it failed: the policy then has no opinion).
    Only the live read decides the state: a history never makes a signal other than ok."""
    if past is None or live.state is not SignalState.OK:
        return live
    if past.history is None:
        return Signal(live.state, live.samples, live.detail,
                      history_detail=past.detail or "history loading")
    return Signal(live.state, live.samples, live.detail, past.history)


def history_keys(runtimes: Sequence[TargetRuntime]) -> set[tuple[str, float]]:
    """The (query, step) of every history read these targets make."""
    return {(p.query, HISTORY_STEP) for rt in runtimes for p in rt.policies
            if p.history_seconds() > 0}


class SignalBatch:
    """One tick's signals, filled as they arrive; each target waits for its own keys only."""

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self._lock = threading.Lock()
        self._signals: dict[str, Signal] = {}
        self._owner = {key: target for target, ks in keys.items() for key in ks}
        self._left = {target: len(set(ks)) for target, ks in keys.items()}
        self._ready = {target: threading.Event() for target in keys}
        self._started = time.monotonic()
        self._seconds: dict[str, float] = {}
        for target, left in self._left.items():
            if left == 0:
                self._seconds[target] = 0.0
                self._ready[target].set()

    def add(self, signals: dict[str, Signal]) -> None:
        """Signals that just arrived; a target whose keys are all in may go on."""
        with self._lock:
            for key, signal in signals.items():
                target = self._owner.get(key)
                if target is None or key in self._signals:
                    continue
                self._signals[key] = signal
                self._left[target] -= 1
                if self._left[target] == 0:
                    self._seconds[target] = time.monotonic() - self._started
                    self._ready[target].set()

    def finish(self, signals: dict[str, Signal], seconds: float) -> None:
        """The read is over: whatever is still missing is in `signals` (or never comes)."""
        self.add(signals)
        with self._lock:
            for target, event in self._ready.items():
                self._seconds.setdefault(target, seconds)
                event.set()

    def wait(self, target: str, keys: Sequence[str],
             timeout: float) -> tuple[dict[str, Signal], float] | None:
        """(the target's signals that were read, seconds until they were in); None on
        timeout."""
        if not self._ready[target].wait(timeout):
            return None
        with self._lock:
            return ({k: self._signals[k] for k in keys if k in self._signals},
                    self._seconds[target])


def build_runtimes(settings: Settings, dry_run: bool) -> list[TargetRuntime]:
    return [TargetRuntime(t, t.effective_policies(), t.effective_guards(),
                          is_dry_run(dry_run, settings, t))
            for t in settings.targets]


def paused_reason(decision: Decision) -> str:
    """Why a paused decision holds ("paused at 3: held", "target is paused", ...)."""
    return next((c.reason for c in decision.clips if c.kind is ClipKind.PAUSED), "paused")


def fit_dry_run(actuator: Actuator, dry_run: bool) -> Actuator:
    """Wrap or unwrap the no-write actuator to match `dry_run`.

    The actuator factory decided at start-up from the config it was given; after a reload that
    turns dry-run on or off, the runtime's flag is the truth, and a write must never be
    reported as done while a DryRunActuator swallows it.
    """
    from autoscaler.actuators.factory import DryRunActuator

    if dry_run and not isinstance(actuator, DryRunActuator):
        return DryRunActuator(actuator)
    if not dry_run and isinstance(actuator, DryRunActuator):
        return actuator.inner
    return actuator


def default_source_factory(config: PrometheusConfig) -> SignalSource:
    """Prometheus, with Stalwart's management API for `stalwart_queue_total` queries."""
    from autoscaler.sources.prometheus import PrometheusSource
    from autoscaler.sources.stalwart_api import RoutedSource

    return RoutedSource(PrometheusSource(config))


class Engine:
    """Ticks over the configured targets. Thread-safe for one tick at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: SignalSource,
        actuator_factory: ActuatorFactory,
        telemetry: Telemetry | None = None,
        health: Health | None = None,
        leadership: Leadership | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        source_factory: SourceFactory | None = None,
        before_tick: Callable[[], None] | None = None,
        tick_budget: float | None = None,
    ) -> None:
        self.settings = settings
        # A one-shot command's own deadline (explain, run --once); None: from the settings.
        self._tick_budget = tick_budget
        self.source = source
        self.source_factory = source_factory or default_source_factory
        self.actuator_factory = actuator_factory
        self.telemetry = telemetry or Telemetry()
        self.health = health or Health(settings.evaluation_interval)
        self.leadership: Leadership = leadership or NoElection()
        self.dry_run_override = dry_run
        self.clock = clock
        # Called as each tick starts: shared backend reads (the Swarm service list) expire.
        self.before_tick = before_tick
        self.runtimes = build_runtimes(settings, dry_run)
        self.telemetry.identify({rt.name: rt.config.metric_identity() for rt in self.runtimes})
        self._pool = self._new_pool(len(self.runtimes))
        # The Prometheus probe has its own thread: a hung target never delays it.
        self._probe_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
        # The tick's one batch read of every target's signals.
        self._signal_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signals")
        self._probe: Future[str | None] | None = None
        self._lock = threading.Lock()
        self.health.config_loaded = True
        self.health.interval = self.tick_budget() + 2.0

    @staticmethod
    def _new_pool(targets: int) -> ThreadPoolExecutor:
        """One worker per target up to 64: a target never has two runs in flight, so a
        hung backend holds one worker, not the pool."""
        return ThreadPoolExecutor(max_workers=max(2, min(64, targets)),
                                  thread_name_prefix="target")

    # ---------------------------------------------------------------------- reload

    def reload(self, settings: Settings, *, wait: float | None = None) -> ReloadSummary:
        """Apply a new, already validated config between two ticks, keeping state.

        Takes the tick lock, so it never runs inside a tick; the next tick uses the new
        config. A target whose name and workload are unchanged keeps its runtime: the
        in-memory recommendations and events that stabilization and cooldowns read, its
        actuator and its HPA check; its policies, guards, bounds and dry-run flag are
        replaced. A removed target is dropped and its series forgotten. The interval is the
        scheduler's to apply (`run_forever`); a changed `prometheus` block gets a new source
        and the old one is closed. `listen` and `leader_election` need a restart.
        Raises, changing nothing, when the new source cannot be built or a stuck tick holds
        the engine past `wait` seconds (default: three tick budgets).
        """
        plan = plan_reload(self.settings, settings)
        new_source = (self.source_factory(settings.prometheus)
                      if plan.summary.prometheus_changed else None)
        wait = 3 * self.tick_budget() if wait is None else wait
        if not self._lock.acquire(timeout=wait):
            if new_source is not None:
                new_source.close()
            raise TimeoutError(f"a tick has held the engine for over {wait:g}s; "
                               "the config was not applied")
        try:
            runtimes: list[TargetRuntime] = []
            for fresh, kept in zip(build_runtimes(settings, self.dry_run_override), plan.keep,
                                   strict=True):
                if kept is None:
                    runtimes.append(fresh)
                    continue
                rt = self.runtimes[kept]
                gone_policies = {p.label for p in rt.policies} - {p.label for p in fresh.policies}
                self.telemetry.forget_policies(rt.name, gone_policies)
                for label in gone_policies:
                    rt.last_unreported.forget(label)
                rt.config, rt.policies, rt.guards = fresh.config, fresh.policies, fresh.guards
                rt.dry_run = fresh.dry_run
                if rt.actuator is not None:
                    rt.actuator = fit_dry_run(rt.actuator, rt.dry_run)
                runtimes.append(rt)
            for index in plan.dropped:
                rt = self.runtimes[index]
                self.telemetry.forget_target(rt.name)
            if len(runtimes) != len(self.runtimes):
                old_pool, self._pool = self._pool, self._new_pool(len(runtimes))
                old_pool.shutdown(wait=False, cancel_futures=True)
            self.runtimes = runtimes
            self.telemetry.identify({rt.name: rt.config.metric_identity() for rt in runtimes})
            self.settings = settings
            self.health.interval = self.tick_budget() + 2.0
            if new_source is not None:
                old_source, self.source = self.source, new_source
                self._adopt_histories(old_source)
                try:
                    old_source.close()
                except Exception:
                    log.warning("closing the previous Prometheus source failed", exc_info=True)
            self._retain_histories(runtimes)  # keep the histories still read
        finally:
            self._lock.release()
        return plan.summary

    def _adopt_histories(self, old_source: SignalSource) -> None:
        """A changed `prometheus` block reading the same series (a timeout, a credential):
        the new source takes the loaded histories over instead of loading days again."""
        try:
            taken = self.source.adopt_history(old_source)
        except Exception:
            log.warning("taking over the loaded histories failed", exc_info=True)
            return
        if taken:
            log.info("%d loaded histories kept across the prometheus change", taken)

    def _retain_histories(self, runtimes: Sequence[TargetRuntime]) -> None:
        """Keep the source's cached histories whose (query, step) is still read."""
        try:
            self.source.retain_history(history_keys(runtimes))
        except Exception:
            log.warning("dropping unused histories failed", exc_info=True)

    # ----------------------------------------------------------------------- ticks

    def tick_budget(self) -> float:
        """A tick may take the interval, or the query timeout plus a margin if longer (a
        one-shot command: its own deadline)."""
        if self._tick_budget is not None:
            return self._tick_budget
        return max(self.settings.evaluation_interval, self.settings.prometheus.timeout + 1.0)

    def tick_deadline(self) -> float:
        return time.monotonic() + self.tick_budget()

    def tick(self) -> list[TargetOutcome]:
        """Evaluate every target once; never raises."""
        with self._lock:
            started = time.monotonic()
            now = self.clock()
            deadline = self.tick_deadline()
            if self.before_tick is not None:
                try:
                    self.before_tick()
                except Exception:
                    log.exception("before-tick hook failed")
            leader = self._leader()
            outcomes = []
            futures: dict[Future[TargetOutcome], TargetRuntime] = {}
            ready: list[TargetRuntime] = []
            for rt in self.runtimes:
                if rt.in_flight is not None and not rt.in_flight.done():
                    # Its backend still has last tick's call: never stack a second one.
                    log.warning("target %s: previous evaluation still running; skipped",
                                rt.name)
                    outcomes.append(TargetOutcome(
                        rt.name, error="previous evaluation still running (backend slow)"))
                    continue
                ready.append(rt)
            batch = self._read_signals(ready, now, deadline)
            for rt in ready:
                fut = self._pool.submit(self._tick_target, rt, now, deadline, leader, batch)
                rt.in_flight = fut
                futures[fut] = rt
            if self._probe is None or self._probe.done():
                self._probe = self._probe_pool.submit(self.source.check_reachable, deadline)
            prom_problem = self._probe
            outcomes += self._collect(futures, deadline)
            problems = {o.target: o.error or o.refused for o in outcomes
                        if o.error or o.refused}
            prom = self._prometheus_problem(prom_problem, deadline)
            if prom:
                problems["prometheus"] = prom
            self._record_tick(outcomes, problems, started)
            return outcomes

    def _collect(self, futures: dict[Future[TargetOutcome], TargetRuntime],
                 deadline: float) -> list[TargetOutcome]:
        """Each target's outcome, or the error of one that failed or missed the deadline."""
        outcomes = []
        done, _ = wait_futures(futures, timeout=max(0.0, deadline - time.monotonic()) + 2.0)
        for fut, rt in futures.items():
            if fut in done:
                try:
                    outcomes.append(fut.result())
                except Exception as exc:
                    log.exception("target %s: tick failed", rt.name)
                    outcomes.append(TargetOutcome(rt.name, error=f"internal error: {exc}"))
            else:
                log.warning("target %s: no decision within this tick's deadline", rt.name)
                outcomes.append(TargetOutcome(rt.name, error="timed out in this tick"))
        return outcomes

    @staticmethod
    def _prometheus_problem(probe: Future[str | None], deadline: float) -> str | None:
        """What the reachability probe found wrong with Prometheus, if anything."""
        try:
            return probe.result(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        except TimeoutError:
            return "no answer within the tick"
        except Exception as exc:
            return f"check failed: {type(exc).__name__}: {exc}"

    def _record_tick(self, outcomes: list[TargetOutcome], problems: Mapping[str, str | None],
                     started: float) -> None:
        """The tick's health (problems, role) and its metrics."""
        self.health.set_problems({k: v for k, v in problems.items() if v})
        self.health.set_paused({o.target: paused_reason(o.decision) for o in outcomes
                                if o.decision is not None
                                and o.decision.outcome is Outcome.PAUSED})
        self.telemetry.record_problems(self.health.problems)
        self.health.role = self.leadership.role
        self.health.ticked()
        self.telemetry.ticks.inc()
        self.telemetry.tick_seconds.observe(time.monotonic() - started)
        self.telemetry.last_tick.set(time.time())
        if not any(o.error for o in outcomes):
            self.telemetry.last_success.set(time.time())

    def _leader(self) -> bool:
        try:
            leader = self.leadership.is_leader()
        except Exception:
            log.exception("leader check failed; acting as standby")
            leader = False
        self.telemetry.leader.set(1 if leader else 0)
        self.health.role = self.leadership.role  # shown from the tick's start, not its end
        return leader

    def _still_leader(self) -> bool:
        try:
            return bool(self.leadership.is_leader())
        except Exception:
            return False

    def _actuator(self, rt: TargetRuntime) -> Actuator:
        if rt.actuator is None:
            try:
                built = self.actuator_factory(rt.config)
            except Exception:
                # A backend client that cannot be built (Docker unreachable, no kubeconfig)
                # is a failed backend call like any other: counted, retried next tick.
                self.telemetry.count_actuation_error(rt.name, "connect")
                raise
            rt.actuator = fit_dry_run(built, rt.dry_run)
        return rt.actuator

    def _timed(self, rt: TargetRuntime, verb: str, call: Callable[[], T]) -> T:
        started, failed = time.monotonic(), True
        try:
            result = call()
            failed = False
            return result
        finally:
            self.telemetry.observe_actuation(rt.name, verb, time.monotonic() - started, failed)

    def _check_hpa(self, rt: TargetRuntime, actuator: Actuator) -> None:
        """At every tick: while a HorizontalPodAutoscaler also scales the workload, it is
        read but never written (a Warning event when that starts); writes resume at the
        first tick after the HPA is gone. A failed check raises: no write this tick."""
        conflict = actuator.hpa_conflict()
        before, rt.refused = rt.refused, conflict
        self.telemetry.set_hpa_conflict(rt.name, conflict is not None)
        if conflict and conflict != before:
            log.error("target %s: %s; it is read but not written while that lasts",
                      rt.name, conflict)
            self._event(actuator, "HPAConflict", f"not scaling: {conflict}", "Warning")
        elif before and not conflict:
            log.warning("target %s: no HorizontalPodAutoscaler scales it any more; "
                        "writes resume", rt.name)
            self._event(actuator, "HPAConflictResolved",
                        "no HorizontalPodAutoscaler scales it any more; writes resume")

    def _check_pause(self, rt: TargetRuntime, actuator: Actuator,
                     status: TargetStatus) -> None:
        """An unreadable paused-replicas value means paused: warned once (log and a Warning
        event) while it lasts; every decision record names it too."""
        before, rt.pause_problem = rt.pause_problem, status.pause_problem
        if status.pause_problem and status.pause_problem != before:
            log.warning("target %s: %s", rt.name, status.pause_problem)
            self._event(actuator, "InvalidPausedReplicas", status.pause_problem, "Warning")

    def _read_signals(self, runtimes: Sequence[TargetRuntime], now: float,
                      deadline: float) -> SignalBatch:
        """Start the tick's one read of every target's signals, in its own thread."""
        keys = {rt.name: [r.key for r in self._requests(rt)] for rt in runtimes}
        requests = [r for rt in runtimes for r in self._requests(rt)]
        batch = SignalBatch(keys)
        source = self.source

        def read() -> None:
            started = time.monotonic()
            try:
                # Signals handed over as they arrive: each target goes on as soon as its own
                # are in, while Prometheus still answers the others' queries.
                signals = source.read(requests, now, deadline, on_signals=batch.add)
            except Exception as exc:  # a source must not raise; if one does, no target hangs
                log.exception("reading the signals failed")
                bad = Signal.bad(SignalState.ERROR, f"reading signals failed: {exc}")
                signals = {r.key: bad for r in requests}
            batch.finish(signals, time.monotonic() - started)

        try:
            self._signal_pool.submit(read)
        except RuntimeError:  # the engine is closing
            batch.finish({}, 0.0)
        return batch

    def _signals(self, rt: TargetRuntime, batch: SignalBatch,
                 deadline: float) -> dict[str, Signal]:
        """This target's part of the tick's batch read; `error` if it is not back in time."""
        keys = [r.key for r in self._requests(rt)]
        found = batch.wait(rt.name, keys, max(0.0, deadline - time.monotonic()) + 1.0)
        if found is None:
            late = Signal.bad(SignalState.ERROR, "signals not read before the tick's deadline")
            return dict.fromkeys(keys, late)
        signals, seconds = found
        self.telemetry.observe_query(rt.name, seconds)
        missing = Signal.bad(SignalState.ERROR, "signal was not read")
        return {key: signals.get(key, missing) for key in keys}

    def _read_status(self, rt: TargetRuntime, actuator: Actuator,
                     now: float | None = None) -> TargetStatus:
        """Read the target; a recreated object (another uid) starts with no memory. At first
        sight (`now` given and nothing remembered) the stabilization history starts with
        (now, current): `first_sight`."""
        status = self._timed(rt, "status", actuator.status)
        rt.state, rt.uid = remembered_for(rt.state, rt.uid, status.uid), status.uid
        if rt.state is None and now is not None:
            rt.state = first_sight(status.state, now, status.current)
        return status

    def _tick_target(self, rt: TargetRuntime, now: float, deadline: float,
                     leader: bool, batch: SignalBatch) -> TargetOutcome:
        outcome = TargetOutcome(rt.name)
        try:
            actuator = self._actuator(rt)
            status = self._read_status(rt, actuator, now)
            self._check_hpa(rt, actuator)
        except (ActuatorError, ValueError, OSError) as exc:
            return self._failed(rt, outcome, f"reading {rt.config.backend} target: {exc}")
        signals = self._signals(rt, batch, deadline)
        outcome.signals, outcome.refused = signals, rt.refused
        self._check_pause(rt, actuator, status)
        paused_at = (None if status.paused_replicas is None else
                     clamp_to_bounds(status.paused_replicas, rt.config.min_replicas,
                                     rt.config.max_replicas))
        gate = write_gate(refused=rt.refused, dry_run=rt.dry_run, paused=status.paused,
                          leader=leader, paused_at=paused_at)
        result = write_target(_TargetWrites(self, rt, actuator, signals, now), status, gate)
        if result.state is not None:
            rt.state = result.state
        outcome.decision, outcome.skipped = result.decision, result.skipped
        if result.outcome is WriteOutcome.REREAD_FAILED:
            return self._failed(rt, outcome, str(result.error))
        if result.outcome is WriteOutcome.WRITE_FAILED:
            self._event(actuator, "FailedRescale",
                        f"failed to scale to {result.decision.desired}: {result.cause}",
                        "Warning")
            self._record(rt, outcome, result.decision)
            return self._failed(rt, outcome, str(result.error))
        if result.outcome is WriteOutcome.WRITTEN:
            outcome.written = True
            self._written(rt, actuator, result)
        self._record(rt, outcome, result.decision)
        return outcome

    def _written(self, rt: TargetRuntime, actuator: Actuator, result: WriteResult) -> None:
        decision = result.decision
        direction = "up" if decision.desired > result.status.current else "down"
        self.telemetry.count_write(rt.name, direction)
        if decision.outcome is Outcome.PAUSED:  # the operator's paused-replicas
            self._event(actuator, "SuccessfulRescale",
                        f"New size: {decision.desired}; reason: {paused_reason(decision)}")
            return
        winner = decision.winner or "bounds"
        self._event(actuator, "SuccessfulRescale",
                    f"New size: {decision.desired}; reason: {winner} "
                    f"({self._winner_reason(decision)})")

    def _decide(self, rt: TargetRuntime, status: TargetStatus, signals: dict[str, Signal],
                now: float) -> Decision:
        """Evaluate on this read, with what this process remembers merged in."""
        status = replace(status, state=merge_states(status.state, rt.state))
        decision = evaluate(
            target=rt.name, now=now, status=status, policies=rt.policies,
            policy_signals={p.label: with_history(
                signals[signal_key(rt.name, "policy", p.label)],
                signals.get(signal_key(rt.name, "history", p.label)))
                for p in rt.policies},
            guards=rt.guards,
            guard_signals={g.label: signals[signal_key(rt.name, "guard", g.label)]
                           for g in rt.guards},
            rules=rt.config.rules(), dry_run=rt.dry_run, last_unreported=rt.last_unreported,
        )
        note_unreported(rt.last_unreported, decision, answered=self.clock())
        return decision

    def _requests(self, rt: TargetRuntime) -> list[SignalRequest]:
        return [
            *(SignalRequest(signal_key(rt.name, "policy", p.label), p.query, p.window_seconds())
              for p in rt.policies),
            # A learning policy's past (seasonal): answered from the source's cache at once,
            # loaded in the source's own thread, never within the tick's deadline.
            *(SignalRequest(signal_key(rt.name, "history", p.label), p.query,
                            p.history_seconds(), SignalKind.HISTORY)
              for p in rt.policies if p.history_seconds() > 0),
            *(SignalRequest(signal_key(rt.name, "guard", g.label), g.query, 0.0)
              for g in rt.guards),
        ]

    @staticmethod
    def _winner_reason(decision: Decision) -> str:
        return next((p.reason for p in decision.policies if p.name == decision.winner),
                    "bounds")

    def _event(self, actuator: Actuator, reason: str, message: str,
               type_: str = "Normal") -> None:
        try:
            actuator.record_event(reason, message, type_)
        except Exception:
            log.warning("could not record event %s", reason, exc_info=True)

    def _failed(self, rt: TargetRuntime, outcome: TargetOutcome, error: str) -> TargetOutcome:
        outcome.error = error
        log.error("target %s: %s; holding its size", rt.name, error)
        decision_log.info(json.dumps({"event": "target_error", "target": rt.name,
                                      "error": error}))
        return outcome

    def _record(self, rt: TargetRuntime, outcome: TargetOutcome, decision: Decision) -> None:
        status_paused = decision.outcome is Outcome.PAUSED
        self.telemetry.record_decision(decision, rt.config.min_replicas,
                                       rt.config.max_replicas, status_paused)
        line = {"event": "decision", **decision.to_dict(), "written": outcome.written,
                "skipped": outcome.skipped or None}
        decision_log.info(json.dumps(line, default=str))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._signal_pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.source.close()
        finally:
            self.leadership.close()


class _TargetWrites:
    """The engine's side of the write protocol for one target in one tick."""

    def __init__(self, engine: Engine, rt: TargetRuntime, actuator: Actuator,
                 signals: dict[str, Signal], now: float) -> None:
        self.engine, self.rt, self.actuator = engine, rt, actuator
        self.signals, self.now = signals, now

    def decide(self, status: TargetStatus) -> Decision:
        return self.engine._decide(self.rt, status, self.signals, self.now)

    def still_leader(self) -> bool:
        # Asked again right before writing: a process frozen mid-tick (SIGSTOP, a long GC
        # pause) may have lost its lease since the tick began.
        return self.engine._still_leader()

    def write(self, decision: Decision, status: TargetStatus) -> None:
        def scale() -> None:
            self.actuator.scale(decision.desired, decision.state,
                                expected_current=status.current)

        self.engine._timed(self.rt, "scale", scale)

    def reread(self) -> TargetStatus:
        return self.engine._read_status(self.rt, self.actuator)


def reload_config(engine: Engine, path: str | Path) -> bool:
    """Re-read `path` and apply it (SIGHUP). Invalid: every problem is logged, one line each
    with file:line and key, the failure is counted, and the running config stays."""
    try:
        settings = load_config(path)
        summary = engine.reload(settings)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("config reload rejected: %s", issue)
        problems = len(exc.issues)
    except Exception as exc:  # a policy plugin, a source that cannot be built: never fatal
        log.error("config reload rejected: %s: %s", path, exc)
        problems = 1
    else:
        log.info("config reloaded from %s: %s", path, summary.describe())
        return True
    engine.telemetry.reload_failures.inc()
    log.error("config reload from %s failed with %s problem(s); the running config stays",
              path, problems)
    return False


