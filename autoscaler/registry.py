"""Policy types by name: the built-ins plus third-party ones from the entry point group.

Kept apart from `policies/` because reading package metadata is not pure math.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from policies import BUILTIN_POLICIES, Policy

ENTRY_POINT_GROUP = "autoscaler.policies"


class RegistryError(RuntimeError):
    """A third-party policy that cannot be loaded or is not a Policy."""


@cache
def policy_types() -> dict[str, type[Policy]]:
    """Every known policy type; a broken plugin is an error naming its entry point."""
    found: dict[str, type[Policy]] = dict(BUILTIN_POLICIES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_POLICIES:
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            raise RegistryError(
                f"policy plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
            ) from exc
        if not (isinstance(obj, type) and issubclass(obj, Policy)):
            raise RegistryError(f"policy plugin {ep.name!r} ({ep.value}) is not a Policy subclass")
        found[ep.name] = obj
    return found
