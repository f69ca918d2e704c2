"""Immutable value types shared by the pure core, the adapters and the replay engine.

Everything here is plain data: no I/O, no clock. Samples carry their own timestamps so a
policy never needs to ask what time it is.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, dataclass_transform

_Record = TypeVar("_Record")


@dataclass_transform(frozen_default=True)
def record(cls: type[_Record]) -> type[_Record]:
    """A value type: frozen to the type checker (mypy --strict rejects every assignment to a
    field), a plain slotted dataclass at run time, hashable by its fields as a frozen one.

    Why not `frozen=True`: a frozen dataclass sets each field through `object.__setattr__`,
    three times slower than a plain one; these records are built several times per
    evaluation, and their construction was 11 % of a 14-day `simulate`.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


class SignalState(StrEnum):
    """How trustworthy a query result is; only ``ok`` may ever lower the replica count."""

    OK = "ok"
    EMPTY = "empty"  # the query returned no series
    NAN = "nan"  # NaN or +-Inf among the samples
    STALE = "stale"  # newest sample older than two scrape intervals
    ERROR = "error"  # timeout, HTTP or parse failure


@record
class Sample:
    """One value of a signal at a moment (seconds since the epoch, or simulated seconds)."""

    t: float
    value: float


@dataclass(frozen=True, slots=True, eq=False)
class History:
    """A long series at a fixed step, oldest first, as compact arrays (`array('d')`): the
    past a learning policy (`seasonal`) reads. Append-only: the source extends the same
    arrays each tick, so a policy may remember how far it has read."""

    t: array[float]
    v: array[float]


@record
class Signal:
    """The samples of one query over a policy's window, oldest first, with its state.

    ``detail`` says why a signal is not ok; on an ok one, what the backend warned about.
    """

    state: SignalState
    samples: tuple[Sample, ...] = ()
    detail: str = ""
    # A `history` read's past (None while it loads, after a failure, or for a live read).
    history: History | None = field(default=None, compare=False, repr=False)
    # Why there is no past ("history loading (3/9 chunks)", a failure): beside `detail`, so
    # the live read's own warnings still reach the decision record.
    history_detail: str = ""

    @property
    def latest(self) -> float | None:
        """The newest value, or None when there is none."""
        return self.samples[-1].value if self.samples else None

    @staticmethod
    def ok(samples: tuple[Sample, ...]) -> Signal:
        return Signal(SignalState.OK, samples)

    @staticmethod
    def bad(state: SignalState, detail: str) -> Signal:
        return Signal(state, (), detail)


class SignalKind(StrEnum):
    """Which read a request asks for.

    ``live``: the policy's window up to now, read every tick. ``history``: a long range
    (days) for a policy that learns from the past (seasonal); a source may fetch it in chunks
    and keep it between ticks.
    """

    LIVE = "live"
    HISTORY = "history"


@record
class SignalRequest:
    """One signal to read: `window` seconds of history, or 0 for only the latest value;
    `kind` says whether it is the live read of every tick or a long history range."""

    key: str
    query: str
    window: float
    kind: SignalKind = SignalKind.LIVE


@record
class Recommendation:
    """A policy's answer: a replica count, or None for "no opinion", and why."""

    replicas: int | None
    reason: str
    # A band-keeping policy's vote for when no other policy sizes the target (None: the
    # same as `replicas`). A two-sided threshold alone holds its band (`alone`); beside
    # policies that size the target it only blocks the counts its own metric cannot take
    # (`replicas`): see `autoscaler.decide.combine_recommendations`.
    alone: int | None = None
    # A raise for a burst the policy predicts (seasonal): when, on the signal's clock, that
    # burst is over. Once it has passed, the recommendations made during it stop holding the
    # scale-down window (`autoscaler.decide.forget_predicted`): the count comes down promptly.
    until: float | None = None
    # What a forecasting policy expects its signal to read `lead` from now (seasonal, in
    # every mode: the record and `autoscaler_policy_forecast` show it beside the value).
    forecast: float | None = None


@record
class PolicyContext:
    """What a policy may know about the target besides its signal.

    ``ready`` is None when the backend does not report readiness. ``tolerance_up`` and
    ``tolerance_down`` are the target's per-direction tolerances (``behavior.scaleUp`` /
    ``scaleDown.tolerance``, the HPA's 0.1 where unset), for a policy without its own.
    """

    current: int
    ready: int | None = None
    tolerance_up: float = 0.1
    tolerance_down: float = 0.1


@record
class PolicyResult:
    """One policy's line in the decision record."""

    name: str
    type: str
    state: SignalState
    value: float | None
    replicas: int | None
    reason: str
    # ok again, but less than its lookback after a gap: it may not lower the count yet
    settling: bool = False
    alone: int | None = None  # Recommendation.alone
    warnings: str = ""  # what the metrics backend warned about with an ok answer
    until: float | None = None  # Recommendation.until: a predicted burst's end
    forecast: float | None = None  # Recommendation.forecast
    # A learning policy's history: seconds of it held (0 while it loads or after a failure);
    # None for a policy that reads none.
    history_seconds: float | None = None

    def vote(self, alone: bool) -> int | None:
        """What it asks for: its `alone` vote while no other policy sizes the target."""
        return self.alone if alone and self.alone is not None else self.replicas

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "state": str(self.state),
            "value": self.value,
            "replicas": self.replicas,
            "reason": self.reason,
        }
        if self.settling:
            out["settling"] = True
        if self.alone is not None:
            out["alone"] = self.alone
        if self.warnings:
            out["warnings"] = self.warnings
        if self.until is not None:
            out["until"] = self.until
        if self.forecast is not None:
            out["forecast"] = self.forecast
        if self.history_seconds is not None:
            out["history_seconds"] = self.history_seconds
        return out


class GuardBlock(StrEnum):
    SCALE_DOWN = "scale_down"
    SCALE_UP = "scale_up"


@record
class GuardResult:
    """A guard's reading: ``active`` True vetoes its direction; None means no usable data."""

    name: str
    block: GuardBlock
    state: SignalState
    value: float | None
    active: bool
    reason: str
    warnings: str = ""  # what the metrics backend warned about with an ok answer

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "block": str(self.block),
            "state": str(self.state),
            "value": self.value,
            "active": self.active,
            "reason": self.reason,
        }
        if self.warnings:
            out["warnings"] = self.warnings
        return out


class ClipKind(StrEnum):
    """Every way the engine can change what the policies asked for."""

    METRIC_ERROR = "metric_error"
    SETTLING = "settling"
    FALLBACK = "fallback"
    STABILIZATION = "stabilization"
    RATE_LIMIT = "rate_limit"
    BOUNDS = "bounds"
    COOLDOWN = "cooldown"
    MANUAL_OVERRIDE = "manual_override"
    GUARD = "guard"
    PAUSED = "paused"


@record
class Clip:
    """One rule that moved the proposal from ``before`` to ``after``, and why."""

    kind: ClipKind
    before: int
    after: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


class Outcome(StrEnum):
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    HOLD = "hold"
    PAUSED = "paused"


@record
class TargetState:
    """What must survive a restart or failover; lives on the target (labels/annotations).

    ``recommendations`` are (time, replicas) pairs; ``events`` are (time, signed change) of
    writes this autoscaler made. ``last_written`` is the spec count we last wrote, used to
    detect an operator's scale. ``manual_time``/``manual_direction`` remember that scale.
    ``pause_applied`` is the paused-replicas count already applied (written, or found in
    place): while the target stays paused at that count it is held, never written again.
    """

    last_scale_time: float | None = None
    last_scale_direction: int = 0
    last_written: int | None = None
    recommendations: tuple[tuple[float, int], ...] = ()
    events: tuple[tuple[float, int], ...] = ()
    manual_time: float | None = None
    manual_direction: int = 0
    pause_applied: int | None = None
    # (start, end, count asked) of bursts a policy predicted and raised for
    # (`Recommendation.until`). Kept in memory only: a restart forgets them and the window
    # then holds as it always did (a scale-down can come later, never sooner).
    predicted: tuple[tuple[float, float, int], ...] = ()


@record
class TargetStatus:
    """What an actuator reads: spec replicas (current), ready replicas, state, pause.

    ``paused_replicas``: the operator's pause at a count (paused-replicas N), None without
    one. ``pause_problem``: why the target is paused although only a count was asked for (an
    unreadable paused-replicas value means paused, with this warning)."""

    current: int
    ready: int | None
    state: TargetState = field(default_factory=TargetState)
    paused: bool = False
    paused_replicas: int | None = None
    pause_problem: str = ""
    # Which object was read (Swarm service ID, Kubernetes uid; "" = unknown): identity, not
    # content, so two reads of equal content compare equal whichever object they came from.
    uid: str = field(default="", compare=False)


@record
class Decision:
    """The decision record: what every policy said, the winner, each clip, the result, and
    the state to keep whether or not the change gets written."""

    target: str
    time: float
    current: int
    ready: int | None
    recommended: int
    desired: int
    outcome: Outcome
    winner: str | None
    policies: tuple[PolicyResult, ...]
    guards: tuple[GuardResult, ...]
    clips: tuple[Clip, ...]
    state: TargetState  # to keep when the change is written (or there is none to write)
    held_state: TargetState  # to keep when it is not: the recommendation, no scale
    dry_run: bool = False
    # Why the scale-down window no longer holds a predicted burst's recommendations ("" if
    # nothing was let go): see `autoscaler.decide.forget_predicted`.
    released: str = ""

    def state_after(self, written: bool) -> TargetState:
        """The state to keep: `decide` gives both, so nothing is undone after a write
        that did not happen."""
        return self.state if written else self.held_state

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "time": self.time,
            "current": self.current,
            "ready": self.ready,
            "recommended": self.recommended,
            "desired": self.desired,
            "outcome": str(self.outcome),
            "winner": self.winner,
            "dry_run": self.dry_run,
            "policies": [p.to_dict() for p in self.policies],
            "guards": [g.to_dict() for g in self.guards],
            "clips": [c.to_dict() for c in self.clips],
            **({"released": self.released} if self.released else {}),
        }
