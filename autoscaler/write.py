"""The per-target write protocol: the write gate, the write, the conflict retry, and which
state to keep.

The gate is one value per target per tick (`write_gate`): why this target may not be written
this tick (an HPA scales it, dry-run, paused, not the leader), or allowed; paused at a count
(paused-replicas N), allowed only to write that count. Leadership is asked
once more right before a write (`WritePort.still_leader`): a process frozen mid-tick may have
lost its Lease since the tick began. A dry run is stopped twice: by the gate, and by the
`DryRunActuator` under it, which has no path to the backend.

`decide` already returns both states (`Decision.state` if the change is written,
`Decision.held_state` if not), so the protocol only picks one: nothing is undone afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from autoscaler.actuators.base import ActuatorError, ConflictError
from autoscaler.config import Settings, TargetConfig
from autoscaler.model import Decision, TargetState, TargetStatus

# The engine's logger: operators and tests follow one name for everything a tick does.
log = logging.getLogger("autoscaler.loop")

CONFLICT_RETRIES = 2
LOST_LEADERSHIP = "standby (lost leadership during the tick)"
GAVE_UP = "gave up after repeated conflicts"


@dataclass(frozen=True, slots=True)
class WriteGate:
    """Whether this target may be written this tick, and why not (shown as `skipped`)."""

    allowed: bool
    reason: str = ""
    only: int | None = None  # paused at a count: no other count may be written


ALLOWED = WriteGate(True)


def is_dry_run(override: bool, settings: Settings, target: TargetConfig) -> bool:
    """THE dry-run rule, the only place it is decided: `--dry-run` (or a command that never
    writes, such as explain), the global `dry_run` or the target's own."""
    return override or settings.dry_run or target.dry_run


def write_gate(*, refused: str | None, dry_run: bool, paused: bool, leader: bool,
               paused_at: int | None = None) -> WriteGate:
    """The write gate, in order: a standing refusal (another autoscaler scales the target)
    names itself; dry-run never writes; a paused target is never written (`paused` wins
    over a pause at a count); only the leader writes; paused at a count (`paused_at`, N
    within the bounds), only N may be written."""
    if refused:
        return WriteGate(False, refused)
    if dry_run:
        return WriteGate(False, "dry-run")
    if paused:
        return WriteGate(False, "paused")
    if not leader:
        return WriteGate(False, "standby (not the leader)")
    if paused_at is not None:
        return WriteGate(True, only=paused_at)
    return ALLOWED


class WriteOutcome(StrEnum):
    UNCHANGED = "unchanged"  # the decision keeps the size: nothing to write
    WRITTEN = "written"
    SKIPPED = "skipped"  # the gate, or leadership lost right before the write
    GAVE_UP = "gave_up"  # a conflict at every attempt
    WRITE_FAILED = "write_failed"
    REREAD_FAILED = "reread_failed"  # after a conflict, the target could not be read again


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What the protocol did for one target. `state` is what to remember; None keeps what
    the engine already holds (after repeated conflicts no decision of this tick stands)."""

    outcome: WriteOutcome
    decision: Decision
    status: TargetStatus  # the last read (a conflict re-reads)
    state: TargetState | None
    skipped: str = ""
    error: str | None = None
    cause: str = ""  # the failed call's own message (for the FailedRescale event)


class WritePort(Protocol):
    """What the protocol needs of the engine for one target in one tick."""

    def decide(self, status: TargetStatus) -> Decision:
        """Evaluate the target on this read (again after a conflict)."""
        ...

    def still_leader(self) -> bool:
        """Asked right before a write."""
        ...

    def write(self, decision: Decision, status: TargetStatus) -> None:
        """Replicas + state in one versioned write; raises ConflictError, ActuatorError,
        OSError."""
        ...

    def reread(self) -> TargetStatus:
        """The target read again after a conflict; raises ActuatorError."""
        ...


def write_target(port: WritePort, status: TargetStatus, gate: WriteGate,
                 retries: int = CONFLICT_RETRIES) -> WriteResult:
    """Decide, and write when the decision changes the size and the gate allows it; on a
    conflict (the object changed since it was read) read again and decide again, at most
    `retries` times."""
    decision = port.decide(status)
    for attempt in range(retries + 1):
        if attempt:
            decision = port.decide(status)
        if decision.desired == status.current:
            return WriteResult(WriteOutcome.UNCHANGED, decision, status, decision.held_state)
        if not gate.allowed:
            return WriteResult(WriteOutcome.SKIPPED, decision, status, decision.held_state,
                               skipped=gate.reason)
        if gate.only is not None and decision.desired != gate.only:
            # A re-read after a conflict found another pause than the tick's gate: not now.
            return WriteResult(WriteOutcome.SKIPPED, decision, status, decision.held_state,
                               skipped=f"paused at {gate.only}")
        if not port.still_leader():
            return WriteResult(WriteOutcome.SKIPPED, decision, status, decision.held_state,
                               skipped=LOST_LEADERSHIP)
        try:
            port.write(decision, status)
        except ConflictError as exc:
            log.warning("target %s: %s; re-reading (attempt %d)", decision.target, exc,
                        attempt + 1)
            try:
                status = port.reread()
            except ActuatorError as exc2:
                return WriteResult(WriteOutcome.REREAD_FAILED, decision, status,
                                   decision.held_state,
                                   error=f"re-reading after a conflict: {exc2}", cause=str(exc2))
            continue
        except (ActuatorError, OSError) as exc:
            return WriteResult(WriteOutcome.WRITE_FAILED, decision, status, decision.held_state,
                               error=f"writing {decision.desired} replicas: {exc}",
                               cause=str(exc))
        return WriteResult(WriteOutcome.WRITTEN, decision, status, decision.state)
    return WriteResult(WriteOutcome.GAVE_UP, decision, status, None, skipped=GAVE_UP)
