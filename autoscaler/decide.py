"""The decision engine: combine -> behavior -> cooldown -> guards -> clamp. Pure; takes `now`.

Each safety rule is a named function with its own table test. `decide` composes them and
writes down every rule that changed the proposal (a `Clip`), so the log, the metrics,
`explain` and `simulate` all show the same record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

from autoscaler.behavior import Behavior, normalize_explained
from autoscaler.model import (
    Clip,
    ClipKind,
    Decision,
    GuardBlock,
    GuardResult,
    Outcome,
    PolicyResult,
    SignalState,
    TargetState,
    TargetStatus,
)


@dataclass(frozen=True, slots=True)
class TargetRules:
    """The per-target limits the engine enforces; policies never see these."""

    min_replicas: int
    max_replicas: int
    behavior: Behavior = field(default_factory=Behavior)
    cooldown_up: float = 0.0
    cooldown_down: float = 0.0
    on_metric_error: Literal["hold", "fallback"] = "hold"
    fallback_replicas: int | None = None


class Combined(NamedTuple):
    """Internal to `decide`, built on every evaluation: a named tuple is the cheapest."""

    recommended: int
    winner: str | None
    clips: tuple[Clip, ...]


def combine_recommendations(
    policies: Sequence[PolicyResult], current: int
) -> tuple[int, str | None]:
    """The highest opinion wins; with no opinion at all the size is held.

    A band-keeping policy (a two-sided threshold: it has an `alone` vote) votes `alone`
    (hold in band, step down below it) only while no other policy sizes the target; beside
    one that does, it votes `replicas`: the fewest its own metric can take, so its band
    never keeps the cluster bigger than that metric needs (max-wins would make its "hold"
    a floor for everyone).
    """
    ok = [p for p in policies if p.state is SignalState.OK]
    alone = not any(p.alone is None and p.replicas is not None for p in ok)
    best: PolicyResult | None = None
    best_vote = 0
    for p in ok:
        vote = p.vote(alone)
        if vote is not None and (best is None or vote > best_vote):
            best, best_vote = p, vote
    if best is None:
        return current, None
    return best_vote, best.name


def unreported(policies: Sequence[PolicyResult]) -> list[PolicyResult]:
    """Policies whose signal is not `ok`: they did not report."""
    return [p for p in policies if p.state is not SignalState.OK]


def hold_on_missing_data(
    recommended: int,
    current: int,
    missing: Sequence[PolicyResult],
    on_metric_error: Literal["hold", "fallback"],
    fallback_replicas: int | None,
) -> tuple[int, Clip | None]:
    """No scale-down unless every policy reported; `fallback` may raise, never lower.

    An empty or failed read must never look like "no load" (an outage read as 0 is how
    other autoscalers scaled production to its minimum at peak).
    """
    if not missing:
        return recommended, None
    names = ", ".join(f"{p.name} ({p.state})" for p in missing)
    if on_metric_error == "fallback" and fallback_replicas is not None:
        floor = max(current, fallback_replicas)
        if recommended < floor:
            return floor, Clip(
                ClipKind.FALLBACK,
                recommended,
                floor,
                f"no data from {names}: fallback to max(current, {fallback_replicas})",
            )
        return recommended, None
    if recommended < current:
        return current, Clip(
            ClipKind.METRIC_ERROR, recommended, current, f"no data from {names}: no scale-down"
        )
    return recommended, None


def is_settling(last_unreported: float | None, now: float, settle_seconds: float) -> bool:
    """True while an `ok` signal is younger than its lookback since it was last not ok.

    After a Prometheus outage or a scrape gap, a `rate()` or a window whose range spans the
    gap is computed from partial data (it reads low) while Prometheus reports it as fine.
    """
    return last_unreported is not None and now - last_unreported < settle_seconds


def hold_while_settling(
    recommended: int, current: int, settling: Sequence[PolicyResult]
) -> tuple[int, Clip | None]:
    """No scale-down on the word of a policy whose data may still be skewed by a gap;
    scale-up stays allowed (too many instances for a while is the cheap mistake)."""
    if not settling or recommended >= current:
        return recommended, None
    names = ", ".join(p.name for p in settling)
    return current, Clip(
        ClipKind.SETTLING, recommended, current,
        f"{names}: data back after a gap, its window may still span it: no scale-down",
    )


def combine(policies: Sequence[PolicyResult], current: int, rules: TargetRules) -> Combined:
    """Combine every policy's answer into one recommendation, missing or settling data held."""
    recommended, winner = combine_recommendations(policies, current)
    held, clip = hold_on_missing_data(
        recommended, current, unreported(policies), rules.on_metric_error, rules.fallback_replicas
    )
    settling = [p for p in policies if p.settling and p.state is SignalState.OK]
    held, settle_clip = hold_while_settling(held, current, settling)
    return Combined(held, winner, tuple(c for c in (clip, settle_clip) if c))


def clamp_to_bounds(replicas: int, min_replicas: int, max_replicas: int) -> int:
    """Never below min, never above max: the last word on every decision."""
    return max(min_replicas, min(max_replicas, replicas))


def cooldown_remaining(
    direction: int, now: float, state: TargetState, cooldown_up: float, cooldown_down: float
) -> float:
    """Seconds until a change in `direction` is allowed after our own last scale.

    The up cooldown stops a second scale-up before the first one's instances serve; the
    (longer) down cooldown stops a scale-down right after any change: no flapping.
    """
    if direction == 0 or state.last_scale_time is None:
        return 0.0
    wait = cooldown_up if direction > 0 else cooldown_down
    return max(0.0, state.last_scale_time + wait - now)


def manual_override_remaining(
    direction: int, now: float, state: TargetState, cooldown_up: float, cooldown_down: float
) -> float:
    """Seconds an operator's scale still blocks the opposite direction.

    A manual scale-up blocks scale-down for `cooldown.down`; a manual scale-down blocks
    scale-up for `cooldown.up`. The operator's number is respected, not reverted at once.
    """
    if direction == 0 or state.manual_time is None or state.manual_direction == 0:
        return 0.0
    if direction == state.manual_direction:
        return 0.0
    wait = cooldown_down if state.manual_direction > 0 else cooldown_up
    return max(0.0, state.manual_time + wait - now)


def guard_is_active(
    block: GuardBlock,
    state: SignalState,
    value: float | None,
    above: float | None,
    below: float | None,
) -> bool:
    """Whether a guard vetoes its direction.

    With no usable data a scale-down guard vetoes (we cannot show it is safe) and a
    scale-up guard does not (adding capacity on missing data is the safe side).
    """
    if state is not SignalState.OK or value is None or math.isnan(value):
        return block is GuardBlock.SCALE_DOWN
    if above is not None and value > above:
        return True
    return below is not None and value < below


def guard_vetoes(direction: int, guards: Sequence[GuardResult]) -> list[GuardResult]:
    """The active guards that block a change in `direction`."""
    if direction == 0:
        return []
    block = GuardBlock.SCALE_UP if direction > 0 else GuardBlock.SCALE_DOWN
    return [g for g in guards if g.block is block and g.active]


def detect_manual_change(status: TargetStatus, now: float) -> TargetState:
    """A spec count that differs from the last one we wrote is an operator's scale.

    A target with no state is adopted as it is.
    """
    state = status.state
    if state.last_written is None:
        return replace(state, last_written=status.current)
    if status.current != state.last_written:
        direction = 1 if status.current > state.last_written else -1
        return replace(
            state, last_written=status.current, manual_time=now, manual_direction=direction
        )
    return state


class PausedAt(NamedTuple):
    """What a pause at a count does this tick: `desired` (the current count when there is
    nothing to write), the count it holds (`at`, N within the bounds) and the record's
    reason."""

    desired: int
    at: int
    reason: str


def pause_at_count(current: int, requested: int, applied: int | None, min_replicas: int,
                   max_replicas: int) -> PausedAt:
    """Paused at a count (paused-replicas N, as KEDA's): scaled to N once, then held.

    N is clamped to [min, max], and the reason says so. Once N is applied (written, or found
    in place), the target is held at whatever it has, even after an operator's scale: no
    further write while the same N stays. A different N is a new request: applied once too.
    """
    count = clamp_to_bounds(requested, min_replicas, max_replicas)
    why = f"paused at {count}"
    if count != requested:
        why += (f" (paused-replicas {requested} is outside the bounds "
                f"[{min_replicas}, {max_replicas}]: clamped)")
    if applied == requested:
        if current != count:
            return PausedAt(current, count, f"{why}: applied; held at {current} "
                                            "(scaled by hand since)")
        return PausedAt(current, count, f"{why}: held")
    if current == count:
        return PausedAt(current, count, f"{why}: held")
    return PausedAt(count, count, f"{why}: scaling {current} -> {count} once, then held")


def pause_states(state: TargetState, now: float, recommended: int, current: int,
                 requested: int, desired: int,
                 behavior: Behavior) -> tuple[TargetState, TargetState]:
    """The state to keep while paused at a count: (if written, if not).

    The recommendation is kept as on any tick (stabilization resumes with it). Our write
    to N is remembered as the last count written, so the next tick does not take it for an
    operator's scale, and as applied, so it is not written again; the last scale time and
    the scale events do not move: the count is the operator's, not a scale of ours, so it
    starts no cooldown and counts against no rate limit.
    """
    held = next_state(state, now, recommended, current, desired, behavior, written=False)
    if desired == current:
        held = replace(held, pause_applied=requested)
        return held, held
    return replace(held, last_written=desired, pause_applied=requested), held


def prune_history(
    pairs: Sequence[tuple[float, int]], now: float, keep_seconds: float
) -> tuple[tuple[float, int], ...]:
    """Keep only what a window or period can still see.

    History is kept in time order, so only a run of the oldest entries drops. Pruning is
    memory hygiene only: every window and period checks each entry's time itself, so an
    entry left behind by a clock step can never count.
    """
    cut = now - keep_seconds
    start = 0
    while start < len(pairs) and pairs[start][0] <= cut:
        start += 1
    return tuple(pairs[start:])


Bursts = tuple[tuple[float, float, int], ...]  # (start, end, the count asked for it)


def note_predicted(predicted: Bursts, now: float,
                   policies: Sequence[PolicyResult]) -> Bursts:
    """The predicted bursts with the one a policy raises for now: a policy that asks for a
    count AND says when the burst it predicts is over (`until`, e.g. `seasonal` ahead of a
    recurring burst) starts one at `now` (with the count it asks), or extends the one in
    progress."""
    end: float | None = None
    size = 0
    for p in policies:
        if p.until is not None and p.replicas is not None and p.state is SignalState.OK \
                and p.until > now:
            end = p.until if end is None else max(end, p.until)
            size = max(size, p.replicas)
    if end is None:
        return predicted
    if predicted and predicted[-1][1] >= now:  # in progress: extend it
        start, last, asked = predicted[-1]
        if end <= last and size <= asked:
            return predicted
        return (*predicted[:-1], (start, max(end, last), max(size, asked)))
    return (*predicted, (now, end, size))


def with_predicted(state: TargetState, now: float,
                   policies: Sequence[PolicyResult]) -> TargetState:
    """`state` with the burst a policy predicts now noted (`note_predicted`)."""
    predicted = note_predicted(state.predicted, now, policies)
    return state if predicted is state.predicted else replace(state, predicted=predicted)


def forget_predicted(
    recommendations: Sequence[tuple[float, int]], predicted: Bursts, now: float,
    recommended: int,
) -> tuple[Sequence[tuple[float, int]], tuple[tuple[float, int], ...]]:
    """(what the stabilization windows read, what they no longer read). The window is sized
    for surprises: it holds the highest recent ask in case the load comes back. A burst the
    history predicted is no surprise:

    - while it runs, an ask made during it above the count asked for it holds the window
      at that count only: the reactive policies' overshoot on the predicted step is let
      go as soon as they ask less, the count asked for the burst stays held, and a burst
      bigger than predicted keeps the count up through the asks now;
    - once its end has passed, every ask made during it above `recommended` is let go:
      the count comes down at the predicted end, not a window later. Asks made AFTER the
      end are held as always (a burst that runs longer than predicted keeps the count up).

    Only asks above `recommended` are left out, so the scale-up window (the lowest recent
    ask, which `recommended` bounds) is unchanged; and `recommended` is already held at
    `current` on missing or settling data, so this never scales down on missing data.
    """
    over = [(s, e) for s, e, _ in predicted if e <= now]
    running = [(s, size) for s, e, size in predicted if s <= now < e]
    if not over and not running:
        return recommendations, ()
    kept: list[tuple[float, int]] = []
    dropped: list[tuple[float, int]] = []
    for t, n in recommendations:
        if n <= recommended or any(s <= t < e for s, e in over):
            if n > recommended:
                dropped.append((t, n))
            else:
                kept.append((t, n))
            continue
        cap = max((size for s, size in running if t >= s), default=n)
        if cap < n:  # asked during the running burst, over the count asked for it
            dropped.append((t, n))
            if cap > recommended:
                kept.append((t, cap))  # that count stays held
        else:
            kept.append((t, n))
    return (kept, tuple(dropped)) if dropped else (recommendations, ())


def next_state(
    state: TargetState,
    now: float,
    recommended: int,
    current: int,
    desired: int,
    behavior: Behavior,
    written: bool,
) -> TargetState:
    """The state to keep after this tick: always the recommendation, a scale only if written."""
    keep = behavior.max_window_seconds()
    recs = prune_history((*state.recommendations, (now, recommended)), now, keep)
    predicted = state.predicted
    if predicted and predicted[0][1] <= now - keep:  # over, and out of every window
        predicted = tuple(b for b in predicted if b[1] > now - keep)
    if not written or desired == current:
        # Built directly: dataclasses.replace is a hot spot in long replays.
        return TargetState(state.last_scale_time, state.last_scale_direction,
                           state.last_written, recs, state.events, state.manual_time,
                           state.manual_direction, state.pause_applied, predicted)
    events = prune_history(
        (*state.events, (now, desired - current)), now, behavior.max_period_seconds()
    )
    return replace(
        state,
        recommendations=recs,
        predicted=predicted,
        events=events,
        last_scale_time=now,
        last_scale_direction=1 if desired > current else -1,
        last_written=desired,
    )


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def decide(
    *,
    target: str,
    now: float,
    status: TargetStatus,
    policies: Sequence[PolicyResult],
    rules: TargetRules,
    guards: Sequence[GuardResult] = (),
    dry_run: bool = False,
) -> Decision:
    """One decision for one target, with its full record and the state to keep both ways
    (`Decision.state` if the change is written, `Decision.held_state` if not); `dry_run`
    only marks the record."""
    current = status.current
    state = detect_manual_change(status, now)
    state = with_predicted(state, now, policies)
    combined = combine(policies, current, rules)
    clips: list[Clip] = list(combined.clips)
    recommended = combined.recommended
    lo, hi = rules.min_replicas, rules.max_replicas

    if status.paused or status.paused_replicas is not None:
        return _paused(target, now, status, recommended, combined, policies, guards, clips,
                       state, rules, dry_run)
    if state.pause_applied is not None:  # the pause at a count is over: forget it
        state = replace(state, pause_applied=None)

    released = ""
    if lo <= current <= hi:
        window, dropped = forget_predicted(state.recommendations, state.predicted, now,
                                           recommended)
        steps = normalize_explained(
            current,
            recommended,
            now,
            behavior=rules.behavior,
            min_replicas=lo,
            max_replicas=hi,
            recommendations=window,
            events=state.events,
        )
        released = released_note(dropped, state.predicted, now, steps.stabilized,
                                  rules.behavior.scale_down.stabilization_window_seconds)
        if steps.stabilized != recommended:
            clips.append(
                Clip(
                    ClipKind.STABILIZATION,
                    recommended,
                    steps.stabilized,
                    "stabilization window holds "
                    + (
                        "the lowest recent recommendation"
                        if steps.stabilized < recommended
                        else "the highest recent recommendation"
                    ),
                )
            )
        if steps.bounded != steps.stabilized:
            kind = ClipKind.RATE_LIMIT if steps.limited_by == "rate_limit" else ClipKind.BOUNDS
            why = (
                f"scaling policy allows {steps.limit} this period"
                if kind is ClipKind.RATE_LIMIT
                else f"bounds [{lo}, {hi}]"
            )
            clips.append(Clip(kind, steps.stabilized, steps.bounded, why))
        desired = steps.bounded
    else:
        desired = current  # out of bounds (an operator's scale): the final clamp fixes it

    direction = _sign(desired - current)
    if direction:
        wait = cooldown_remaining(direction, now, state, rules.cooldown_up, rules.cooldown_down)
        if wait > 0:
            which = "up" if direction > 0 else "down"
            clips.append(
                Clip(
                    ClipKind.COOLDOWN,
                    desired,
                    current,
                    f"{which} cooldown: {wait:.0f}s left since the last scale",
                )
            )
            desired = current
    direction = _sign(desired - current)
    if direction:
        wait = manual_override_remaining(
            direction, now, state, rules.cooldown_up, rules.cooldown_down
        )
        if wait > 0:
            clips.append(
                Clip(
                    ClipKind.MANUAL_OVERRIDE,
                    desired,
                    current,
                    f"manual scale to {current} respected for {wait:.0f}s more",
                )
            )
            desired = current
    direction = _sign(desired - current)
    vetoes = guard_vetoes(direction, guards)
    if vetoes:
        clips.append(
            Clip(
                ClipKind.GUARD, desired, current, "; ".join(f"{g.name}: {g.reason}" for g in vetoes)
            )
        )
        desired = current

    bounded = clamp_to_bounds(desired, lo, hi)
    if bounded != desired:
        clips.append(Clip(ClipKind.BOUNDS, desired, bounded, f"bounds [{lo}, {hi}]"))
        desired = bounded

    outcome = (
        Outcome.SCALE_UP
        if desired > current
        else Outcome.SCALE_DOWN
        if desired < current
        else Outcome.HOLD
    )
    return _decision(target, now, status, recommended, desired, outcome, combined, policies,
                     guards, clips, state, rules, dry_run, released)


def released_note(dropped: Sequence[tuple[float, int]], predicted: Bursts, now: float,
                  stabilized: int, down_window: float) -> str:
    """The record's line when the asks of a predicted burst that is over no longer hold the
    scale-down window and would have held more than it now allows ("" otherwise)."""
    held = max((n for t, n in dropped if t > now - down_window), default=0)
    if held <= stabilized:
        return ""
    ends = [e for _, e, _ in predicted if e <= now]
    if ends:
        return (f"predicted burst over {now - max(ends):.0f}s ago: its asks (up to {held}) no "
                f"longer hold the scale-down window")
    size = max(n for s, e, n in predicted if s <= now < e)
    return (f"predicted burst in progress: asks over the {size} asked for it (up to {held}) "
            f"no longer hold the scale-down window")


def _paused(target: str, now: float, status: TargetStatus, recommended: int,
            combined: Combined, policies: Sequence[PolicyResult],
            guards: Sequence[GuardResult], clips: list[Clip], state: TargetState,
            rules: TargetRules, dry_run: bool) -> Decision:
    """A paused target is never written; `paused` wins over a pause at a count, which
    writes its count once (`pause_at_count`, `pause_states`)."""
    current = status.current
    if status.paused or status.paused_replicas is None:
        clips.append(Clip(ClipKind.PAUSED, recommended, current,
                          status.pause_problem or "target is paused"))
        return _decision(target, now, status, recommended, current, Outcome.PAUSED, combined,
                         policies, guards, clips, state, rules, dry_run)
    paused = pause_at_count(current, status.paused_replicas, state.pause_applied,
                            rules.min_replicas, rules.max_replicas)
    clips.append(Clip(ClipKind.PAUSED, recommended, paused.desired, paused.reason))
    return _decision(target, now, status, recommended, paused.desired, Outcome.PAUSED,
                     combined, policies, guards, clips, state, rules, dry_run,
                     states=pause_states(state, now, recommended, current,
                                         status.paused_replicas, paused.desired,
                                         rules.behavior))


def _decision(target: str, now: float, status: TargetStatus, recommended: int, desired: int,
              outcome: Outcome, combined: Combined, policies: Sequence[PolicyResult],
              guards: Sequence[GuardResult], clips: list[Clip], state: TargetState,
              rules: TargetRules, dry_run: bool, released: str = "",
              states: tuple[TargetState, TargetState] | None = None) -> Decision:
    """The record, with the state to keep both ways (`states`, (if written, if not), when
    the caller has its own: a pause at a count)."""
    if states is None:
        states = _both_states(state, now, recommended, status.current, desired, rules.behavior)
    return Decision(target, now, status.current, status.ready, recommended, desired, outcome,
                    combined.winner, tuple(policies), tuple(guards), tuple(clips),
                    *states, dry_run, released)


def _both_states(state: TargetState, now: float, recommended: int, current: int, desired: int,
                 behavior: Behavior) -> tuple[TargetState, TargetState]:
    """`next_state` (if written, if not): one object when there is no change to write."""
    held = next_state(state, now, recommended, current, desired, behavior, False)
    if desired == current:
        return held, held
    return next_state(state, now, recommended, current, desired, behavior, True), held
