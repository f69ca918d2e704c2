"""What the loop needs of a backend: read the target, write replicas + state in one update.

`Actuator` lists every method the engine calls; the optional ones (events, the HPA check)
have no-op defaults that an actuator inherits by subclassing the Protocol explicitly.
"""

from __future__ import annotations

from typing import Protocol

from autoscaler.errors import ActuatorError, ConflictError, NotAllowed, TargetMissing
from autoscaler.model import TargetState, TargetStatus

# The errors an actuator raises live in autoscaler.errors (the Lease shares them).
__all__ = ["Actuator", "ActuatorError", "ConflictError", "NotAllowed", "TargetMissing"]


class Actuator(Protocol):
    """One target on one backend. Subclass it explicitly to inherit the optional defaults."""

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

    def record_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        """Record a scale (or a failed one) where operators look (a Kubernetes Event); a
        backend without events ignores it. Must not raise for a missing permission."""
        return None

    def hpa_conflict(self) -> str | None:
        """Why this target must never be written because another autoscaler (a
        HorizontalPodAutoscaler) scales it, or None. Backends without one: None."""
        return None
