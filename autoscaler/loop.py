"""The live loop: one tick evaluates every target concurrently; APScheduler runs the ticks.

Per target: read the status, merge the state kept on the target with what this process
remembers, take its signals, `evaluate()`, write replicas + state in one update when the write
gate allows (not dry-run, not paused, leader), and record the decision (JSON log line,
metrics, Kubernetes event). A slow or failing target never delays the others: each runs in its
own thread against a shared tick deadline, and an error is that target's alone. The signals
of all targets are read in ONE batch per tick (`SignalSource.read`, in a thread of its own,
started before the targets' status reads): the source can then send identical queries once
and group queries that differ only by a target label.
A reload (SIGHUP, `Engine.reload`) swaps the config between two ticks and keeps the state of
every target it still names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

from autoscaler.actuators.base import Actuator, ActuatorError, ConflictError
from autoscaler.config import (
    ConfigError,
    GuardConfig,
    PrometheusConfig,
    Settings,
    TargetConfig,
    load_config,
)
from autoscaler.decide import detect_manual_change
from autoscaler.evaluate import evaluate, note_unreported
from autoscaler.leader import Leadership, NoElection, may_write
from autoscaler.model import (
    Decision,
    Outcome,
    Signal,
    SignalRequest,
    SignalState,
    TargetState,
    TargetStatus,
)
from autoscaler.sources.base import SignalSource
from autoscaler.state import merge_states, remembered_for
from autoscaler.telemetry import Health, Telemetry
from policies import Policy

log = logging.getLogger("autoscaler.loop")
decision_log = logging.getLogger("autoscaler.decision")
CONFLICT_RETRIES = 2


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
    refused: str | None = None  # a standing reason never to write (HPA conflict)
    hpa_checked: bool = False
    in_flight: Future[TargetOutcome] | None = None  # a run that outlived its tick (hung backend)
    # policy label -> when its signal was last not ok (no scale-down on it while settling)
    last_unreported: dict[str, float] = field(default_factory=dict)

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
    signals: dict[str, Signal] = field(default_factory=dict)


def signal_key(target: str, kind: str, label: str) -> str:
    return f"{target}\x1f{kind}\x1f{label}"


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
                          dry_run or settings.dry_run or t.dry_run)
            for t in settings.targets]


def workload_key(target: TargetConfig) -> tuple[str, ...]:
    """What a reload must leave unchanged for a target to keep its state: its name and the
    workload it scales. Policies, bounds, behavior and cooldowns may change."""
    return (target.name, target.backend, target.service or "", target.namespace or "",
            target.deployment or "", target.statefulset or "")


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
    from autoscaler.sources.prometheus import PrometheusSource

    return PrometheusSource(config)


@dataclass(frozen=True)
class ReloadSummary:
    """What `Engine.reload` changed, for the log."""

    kept: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    replaced: tuple[str, ...]  # same name, another workload: its state starts afresh
    interval: tuple[float, float]  # (before, after)
    prometheus_changed: bool
    needs_restart: tuple[str, ...]  # keys only a restart applies

    def describe(self) -> str:
        parts = [f"{len(self.kept)} target(s) kept with their state"]
        for label, names in (("added", self.added), ("removed", self.removed),
                             ("replaced (new workload, fresh state)", self.replaced)):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        before, after = self.interval
        if before != after:
            parts.append(f"evaluation_interval {before:g}s -> {after:g}s")
        if self.prometheus_changed:
            parts.append("new Prometheus connection")
        if self.needs_restart:
            parts.append(f"unchanged until a restart: {', '.join(self.needs_restart)}")
        return "; ".join(parts)


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
        old = self.settings
        new_source = (self.source_factory(settings.prometheus)
                      if settings.prometheus != old.prometheus else None)
        wait = 3 * self.tick_budget() if wait is None else wait
        if not self._lock.acquire(timeout=wait):
            if new_source is not None:
                new_source.close()
            raise TimeoutError(f"a tick has held the engine for over {wait:g}s; "
                               "the config was not applied")
        try:
            current = {workload_key(rt.config): rt for rt in self.runtimes}
            runtimes: list[TargetRuntime] = []
            kept: list[str] = []
            added: list[str] = []
            for fresh in build_runtimes(settings, self.dry_run_override):
                rt = current.pop(workload_key(fresh.config), None)
                if rt is None:
                    runtimes.append(fresh)
                    added.append(fresh.name)
                    continue
                gone_policies = {p.label for p in rt.policies} - {p.label for p in fresh.policies}
                self._forget_policies(rt.name, gone_policies)
                for label in gone_policies:
                    rt.last_unreported.pop(label, None)
                rt.config, rt.policies, rt.guards = fresh.config, fresh.policies, fresh.guards
                rt.dry_run = fresh.dry_run
                if rt.actuator is not None:
                    rt.actuator = fit_dry_run(rt.actuator, rt.dry_run)
                runtimes.append(rt)
                kept.append(rt.name)
            for rt in current.values():
                self.telemetry.forget_target(rt.name)
                self._forget_policies(rt.name, {p.label for p in rt.policies})
            if len(runtimes) != len(self.runtimes):
                old_pool, self._pool = self._pool, self._new_pool(len(runtimes))
                old_pool.shutdown(wait=False, cancel_futures=True)
            self.runtimes = runtimes
            self.settings = settings
            self.health.interval = self.tick_budget() + 2.0
            if new_source is not None:
                old_source, self.source = self.source, new_source
                try:
                    old_source.close()
                except Exception:
                    log.warning("closing the previous Prometheus source failed", exc_info=True)
        finally:
            self._lock.release()
        removed = {rt.name for rt in current.values()}
        return ReloadSummary(
            kept=tuple(kept),
            added=tuple(n for n in added if n not in removed),
            removed=tuple(sorted(removed - set(added))),
            replaced=tuple(n for n in added if n in removed),
            interval=(old.evaluation_interval, settings.evaluation_interval),
            prometheus_changed=new_source is not None,
            needs_restart=tuple(key for key in ("listen", "leader_election")
                                if getattr(settings, key) != getattr(old, key)),
        )

    def _forget_policies(self, target: str, labels: set[str]) -> None:
        """Drop the per-policy series `forget_target` does not cover."""
        t = self.telemetry
        t.forget_children(target)
        for label in labels:
            for metric, values in (
                (t.policy_value, [(target, label)]),
                (t.policy_recommendation, [(target, label)]),
                (t.signal_state, [(target, label, str(s)) for s in SignalState]),
            ):
                for labelvalues in values:
                    with contextlib.suppress(KeyError):
                        metric.remove(*labelvalues)

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
            problems = {o.target: o.error for o in outcomes if o.error}
            try:
                prom = prom_problem.result(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
            except TimeoutError:
                prom = "no answer within the tick"
            except Exception as exc:
                prom = f"check failed: {type(exc).__name__}: {exc}"
            if prom:
                problems["prometheus"] = prom
            self.health.set_problems({k: v for k, v in problems.items() if v})
            self.health.role = self.leadership.role
            self.health.ticked()
            self.telemetry.ticks.inc()
            self.telemetry.tick_seconds.observe(time.monotonic() - started)
            self.telemetry.last_tick.set(time.time())
            if not any(o.error for o in outcomes):
                self.telemetry.last_success.set(time.time())
            return outcomes

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
                self.telemetry.actuation_errors.labels(rt.name, "connect").inc()
                raise
            rt.actuator = fit_dry_run(built, rt.dry_run)
        return rt.actuator

    def _timed(self, rt: TargetRuntime, verb: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return call()
        except Exception:
            self.telemetry.actuation_errors.labels(rt.name, verb).inc()
            raise
        finally:
            self.telemetry.child(self.telemetry.actuation_seconds, rt.name, verb).observe(
                time.monotonic() - started)

    def _check_hpa(self, rt: TargetRuntime, actuator: Actuator) -> None:
        """Refuse a Kubernetes workload that a HorizontalPodAutoscaler also scales."""
        if rt.hpa_checked:
            return
        conflict = actuator.hpa_conflict()
        rt.hpa_checked = True
        if conflict:
            rt.refused = conflict
            log.error("target %s: %s; it will be read but never written", rt.name, conflict)

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
        self.telemetry.child(self.telemetry.query_seconds, rt.name).observe(seconds)
        missing = Signal.bad(SignalState.ERROR, "signal was not read")
        return {key: signals.get(key, missing) for key in keys}

    def _tick_target(self, rt: TargetRuntime, now: float, deadline: float,
                     leader: bool, batch: SignalBatch) -> TargetOutcome:
        outcome = TargetOutcome(rt.name)
        try:
            actuator = self._actuator(rt)
            status: TargetStatus = self._timed(rt, "status", actuator.status)
            rt.state, rt.uid = remembered_for(rt.state, rt.uid, status.uid), status.uid
            self._check_hpa(rt, actuator)
        except (ActuatorError, ValueError, OSError) as exc:
            return self._failed(rt, outcome, f"reading {rt.config.backend} target: {exc}")
        signals = self._signals(rt, batch, deadline)
        outcome.signals = signals
        for attempt in range(CONFLICT_RETRIES + 1):
            decision, before = self._decide(rt, status, signals, now, leader)
            outcome.decision = decision
            allowed, why = may_write(dry_run=rt.dry_run, paused=status.paused,
                                     leader=leader and rt.refused is None)
            if rt.refused:
                why = rt.refused
            if decision.desired == status.current:
                rt.state = decision.state
                break
            if not allowed:
                outcome.skipped = why
                rt.state = decision.state
                break
            if not self._still_leader():
                # Asked again right before writing: a process frozen mid-tick (SIGSTOP,
                # a long GC pause) may have lost its lease since the tick began.
                outcome.skipped = "standby (lost leadership during the tick)"
                rt.state = self._unwritten(decision, before)
                break

            def write(d: Decision = decision, s: TargetStatus = status) -> None:
                actuator.scale(d.desired, d.state, expected_current=s.current)

            try:
                self._timed(rt, "scale", write)
            except ConflictError as exc:
                log.warning("target %s: %s; re-reading (attempt %d)", rt.name, exc, attempt + 1)
                try:
                    status = self._timed(rt, "status", actuator.status)
                    rt.state, rt.uid = remembered_for(rt.state, rt.uid, status.uid), status.uid
                except ActuatorError as exc2:
                    rt.state = self._unwritten(decision, before)
                    return self._failed(rt, outcome, f"re-reading after a conflict: {exc2}")
                continue
            except (ActuatorError, OSError) as exc:
                rt.state = self._unwritten(decision, before)
                self._event(actuator, "FailedRescale",
                            f"failed to scale to {decision.desired}: {exc}", "Warning")
                self._record(rt, outcome, decision)
                return self._failed(rt, outcome, f"writing {decision.desired} replicas: {exc}")
            outcome.written = True
            rt.state = decision.state
            direction = "up" if decision.desired > status.current else "down"
            self.telemetry.scale_writes.labels(rt.name, direction).inc()
            winner = decision.winner or "bounds"
            self._event(actuator, "SuccessfulRescale",
                        f"New size: {decision.desired}; reason: {winner} "
                        f"({self._winner_reason(decision)})")
            break
        else:
            outcome.skipped = "gave up after repeated conflicts"
        if outcome.decision is not None:
            self._record(rt, outcome, outcome.decision)
        return outcome

    def _decide(self, rt: TargetRuntime, status: TargetStatus, signals: dict[str, Signal],
                now: float, leader: bool) -> tuple[Decision, Any]:
        state = merge_states(status.state, rt.state)
        status = replace(status, state=state)
        writes = not (rt.dry_run or status.paused or not leader or rt.refused)
        decision = evaluate(
            target=rt.name, now=now, status=status, policies=rt.policies,
            policy_signals={p.label: signals[signal_key(rt.name, "policy", p.label)]
                            for p in rt.policies},
            guards=rt.guards,
            guard_signals={g.label: signals[signal_key(rt.name, "guard", g.label)]
                           for g in rt.guards},
            rules=rt.config.rules(), dry_run=not writes, last_unreported=rt.last_unreported,
        )
        note_unreported(rt.last_unreported, decision)
        return replace(decision, dry_run=rt.dry_run), detect_manual_change(status, now)

    @staticmethod
    def _unwritten(decision: Decision, before: Any) -> Any:
        """The state to keep when the write did not happen: the recommendation only."""
        return replace(decision.state, events=before.events,
                       last_scale_time=before.last_scale_time,
                       last_scale_direction=before.last_scale_direction,
                       last_written=before.last_written)

    def _requests(self, rt: TargetRuntime) -> list[SignalRequest]:
        return [
            *(SignalRequest(signal_key(rt.name, "policy", p.label), p.query, p.window_seconds())
              for p in rt.policies),
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line; decision lines are already JSON and are passed through."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == decision_log.name and message.startswith("{"):
            return message
        line: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname,
                                "logger": record.name, "message": message}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # APScheduler's "Running job"/"executed successfully" lines would double every tick's
    # log; a tick that overruns the interval still shows (a WARNING, and the tick metrics).
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))


def run_forever(
    engine: Engine,
    interval: float,
    stop: threading.Event,
    *,
    wake: threading.Event | None = None,
    on_wake: Callable[[], float] | None = None,
    on_tick: Callable[[list[TargetOutcome]], None] | None = None,
) -> None:
    """Tick every `interval` with APScheduler (max_instances=1, coalesce) until `stop`.

    `on_tick` runs in the scheduler's thread after every completed tick: the systemd watchdog
    ping lives there, so a loop that stops completing ticks stops pinging. Whenever `wake` is
    set, `on_wake` runs in the caller's thread (a SIGHUP reload: `Engine.reload` waits for the
    tick in flight) and returns the interval from then on; a change reschedules the job.
    On stop the scheduler finishes the tick in flight before returning.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    def job() -> None:
        outcomes = engine.tick()
        if on_tick is not None:
            try:
                on_tick(outcomes)
            except Exception:
                log.exception("after-tick hook failed")

    scheduler = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True,
                                                  "misfire_grace_time": None})
    scheduler.add_job(job, "interval", seconds=interval, id="tick",
                      next_run_time=_now_for_scheduler())
    scheduler.start()
    try:
        while not stop.is_set():
            (wake or stop).wait()
            if stop.is_set() or wake is None:
                break
            wake.clear()
            if on_wake is None:
                continue
            new_interval = on_wake()
            if new_interval != interval:
                log.info("evaluation interval %gs -> %gs", interval, new_interval)
                scheduler.reschedule_job("tick", trigger="interval", seconds=new_interval)
                interval = new_interval
    finally:
        scheduler.shutdown(wait=True)


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


def _now_for_scheduler() -> Any:
    from datetime import datetime

    return datetime.now(UTC)
