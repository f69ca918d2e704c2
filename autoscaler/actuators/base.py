"""What the loop needs of a backend: read the target, write replicas + state in one update."""

from __future__ import annotations

from typing import Protocol

from autoscaler.model import TargetState, TargetStatus


class ActuatorError(RuntimeError):
    """A read or write that failed; the message names the verb, the object and the cause."""


class TargetMissing(ActuatorError):
    """The service or workload does not exist (an error for that target only)."""


class ConflictError(ActuatorError):
    """The object changed between our read and our write; re-read and decide again."""


class NotAllowed(ActuatorError):
    """This process may not write (not a manager, forbidden by RBAC, refused config)."""


class Actuator(Protocol):
    """One target on one backend."""

    @property
    def description(self) -> str:
        """e.g. `swarm service stalwart_smtp` or `kubernetes deployment mail/smtp`."""
        ...

    def status(self) -> TargetStatus:
        """Spec replicas, ready replicas, decoded state and pause flag."""
        ...

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        """Write `replicas` and `state` in ONE versioned update of the object read by the
        last `status()`. Raises ConflictError when the object changed since (including a
        spec count other than `expected_current`), NotAllowed, TargetMissing or
        ActuatorError."""
        ...
