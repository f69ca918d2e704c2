"""What a backend call fails with: shared by the actuators, the Kubernetes layer and the Lease.

A leaf module, so the Lease elector and the Kubernetes client layer can raise and catch the
same types as the actuators without importing any actuator.
"""

from __future__ import annotations


class ActuatorError(RuntimeError):
    """A read or write that failed; the message names the verb, the object and the cause."""


class TargetMissing(ActuatorError):
    """The object (service, workload, Lease) does not exist."""


class ConflictError(ActuatorError):
    """The object changed between our read and our write; re-read and decide again."""


class NotAllowed(ActuatorError):
    """This process may not write (not a manager, forbidden by RBAC, refused config)."""
