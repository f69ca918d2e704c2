"""One evaluation of one target from signals already read: policies, guards, decide.

Shared by the live loop, `explain` and the replay engine, so what staging and replay show is
what production does. Pure: the signals come in, the decision record goes out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from autoscaler.decide import TargetRules, decide, guard_is_active, is_settling
from autoscaler.model import (
    Decision,
    GuardBlock,
    GuardResult,
    PolicyContext,
    PolicyResult,
    Signal,
    SignalState,
    TargetStatus,
)
from policies import Policy

# What a policy or guard whose signal is missing from the map sees (one, immutable).
NOT_READ = Signal.bad(SignalState.ERROR, "signal was not read")


class GuardSpec(Protocol):
    """What the engine needs of a guard's configuration."""

    @property
    def label(self) -> str: ...
    @property
    def block(self) -> GuardBlock: ...
    @property
    def above(self) -> float | None: ...
    @property
    def below(self) -> float | None: ...


def checked_signal(signal: Signal) -> Signal:
    """Demote an `ok` signal holding NaN or +-Inf to `nan`: such data never reaches a policy."""
    if signal.state is SignalState.OK:
        if not signal.samples:
            return Signal.bad(SignalState.EMPTY, "no samples")
        if not all(map(math.isfinite, [s.value for s in signal.samples])):
            return Signal.bad(SignalState.NAN, "NaN or Inf in the samples")
    return signal


def run_policy(policy: Policy, signal: Signal, ctx: PolicyContext,
               settling: bool = False) -> PolicyResult:
    """A policy's line in the record; a signal that is not ok is "not reported"."""
    signal = checked_signal(signal)
    if signal.state is not SignalState.OK:
        return PolicyResult(policy.label, policy.type, signal.state, None, None,
                            f"not reported: {signal.state} ({signal.detail})")
    try:
        rec = policy.recommend(signal, ctx)
    except ArithmeticError as exc:
        # A finite but huge value (1.7e308 x headroom is +Inf) has no replica count: the
        # policy did not report, so the target holds instead of the whole tick failing.
        return PolicyResult(policy.label, policy.type, SignalState.ERROR, signal.latest, None,
                            f"not reported: cannot compute from {signal.latest:.4g} "
                            f"({type(exc).__name__})")
    held = history_held(policy, signal)
    if settling:
        return PolicyResult(policy.label, policy.type, SignalState.OK, signal.latest,
                            rec.replicas, f"{rec.reason} (settling after a gap in its data)",
                            settling=True, alone=rec.alone, warnings=signal.detail,
                            until=rec.until, forecast=rec.forecast, history_seconds=held)
    return PolicyResult(policy.label, policy.type, SignalState.OK, signal.latest, rec.replicas,
                        rec.reason, alone=rec.alone, warnings=signal.detail, until=rec.until,
                        forecast=rec.forecast, history_seconds=held)


def history_held(policy: Policy, signal: Signal) -> float | None:
    """Seconds of history a learning policy was handed (0 while it loads or after a
    failure): `autoscaler_policy_history_seconds`. None for a policy that reads none."""
    if policy.history_seconds() <= 0:
        return None
    past = signal.history
    return past.t[-1] - past.t[0] if past is not None and len(past.t) > 1 else 0.0


def run_guard(guard: GuardSpec, signal: Signal) -> GuardResult:
    """A guard's reading, active when its condition holds (or, for scale-down, is unknown)."""
    signal = checked_signal(signal)
    value = signal.latest if signal.state is SignalState.OK else None
    active = guard_is_active(guard.block, signal.state, value, guard.above, guard.below)
    if signal.state is not SignalState.OK:
        reason = f"no data ({signal.state}): " + ("veto" if active else "no veto")
    else:
        bounds = guard_bounds(guard.above, guard.below)
        reason = f"{value:.4g} {'is' if active else 'is not'} {bounds}"
    warnings = signal.detail if signal.state is SignalState.OK else ""
    return GuardResult(guard.label, guard.block, signal.state, value, active, reason, warnings)


@functools.cache
def guard_bounds(above: float | None, below: float | None) -> str:
    """A guard's condition as the record shows it ("> 20 or < 1"); the same few guards are
    read on every evaluation, so each text is built once."""
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if below is not None:
        bounds.append(f"< {below:g}")
    return " or ".join(bounds)


def evaluate(
    *,
    target: str,
    now: float,
    status: TargetStatus,
    policies: Sequence[Policy],
    policy_signals: Mapping[str, Signal],
    guards: Sequence[GuardSpec],
    guard_signals: Mapping[str, Signal],
    rules: TargetRules,
    dry_run: bool = False,
    last_unreported: Mapping[str, float] | None = None,
) -> Decision:
    """Every policy and guard on its signal, then `decide`. `last_unreported` maps a
    policy's label to when its last gap ended (see `note_unreported`)."""
    up, down = rules.behavior.tolerances()
    ctx = PolicyContext(current=status.current, ready=status.ready,
                        tolerance_up=up, tolerance_down=down)
    gaps = last_unreported or {}
    results = [run_policy(p, policy_signals.get(p.label, NOT_READ), ctx,
                          p.label in gaps and is_settling(gaps[p.label], now, p.settle_seconds()))
               for p in policies]
    guard_results = [run_guard(g, guard_signals.get(g.label, NOT_READ)) for g in guards]
    return decide(target=target, now=now, status=status, policies=results, rules=rules,
                  guards=guard_results, dry_run=dry_run)


class Unreported(dict[str, float]):
    """Policy label -> when its data last had a gap, for the settling rule; `open` holds the
    labels whose gap has not yet been followed by an ok answer."""

    def __init__(self) -> None:
        super().__init__()
        self.open: set[str] = set()

    def forget(self, label: str) -> None:
        """A policy a reload removed."""
        self.pop(label, None)
        self.open.discard(label)


def note_unreported(last_unreported: Unreported, decision: Decision,
                    answered: float | None = None) -> None:
    """Remember when each policy's gap ended, for the next evaluations' settling.

    The clock restarts at the first ok answer after a gap, at the time that answer arrived
    (`answered`, the tick's reads done; the decision's time in replay): a tick that started
    while Prometheus was frozen gets its ok answer after the thaw, and a rate() then still
    spans the gap for its whole range. Counting from the last failed answer ended settling
    while the data was still skewed (a scale-down 7 s after a 7 s freeze was seen)."""
    for p in decision.policies:
        if p.state is not SignalState.OK:
            last_unreported[p.name] = decision.time
            last_unreported.open.add(p.name)
        elif p.name in last_unreported.open:
            last_unreported[p.name] = max(decision.time, answered or decision.time)
            last_unreported.open.discard(p.name)
