"""Kind → resource through API discovery, for targets named by `scale_target_ref`.

An HPA names its target by apiVersion, kind and name; the API's paths (and RBAC) use the
resource, the plural (`Rollout` → `rollouts`). The API server says which in its resource list
for the group/version (`GET /apis/GROUP/VERSION`, `/api/v1` for the core group): an entry
`{name: rollouts, kind: Rollout, namespaced: true}`, and an entry `rollouts/scale` when the
kind has a scale subresource.

No I/O here: the list call is passed in (`fetch(api_version)` → the APIResourceList as JSON),
so the mapping and the caching are table-tested. A list is kept for the process; a kind it
does not hold is looked up again at most every `refresh` seconds (a CRD installed, or given
a scale subresource, after the daemon started is found without a restart).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.errors import ActuatorError

__all__ = ["ApiDiscovery", "DiscoveryError", "ScaleResource", "scale_resource"]

REFRESH_SECONDS = 60.0


class DiscoveryError(ActuatorError):
    """The kind is not served, is not namespaced, or has no scale subresource."""


@dataclass(frozen=True, slots=True)
class ScaleResource:
    """Where a kind's objects and their /scale live."""

    api_version: str  # argoproj.io/v1alpha1, v1
    kind: str  # Rollout
    plural: str  # rollouts

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def rbac_resource(self) -> str:
        """As RBAC and error messages name it: `rollouts.argoproj.io`, `replicationcontrollers`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str, name: str, subresource: str = "") -> str:
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        tail = f"/{subresource}" if subresource else ""
        return f"{root}/namespaces/{namespace}/{self.plural}/{name}{tail}"


def scale_resource(resource_list: Mapping[str, Any], api_version: str,
                   kind: str) -> ScaleResource:
    """The resource serving `kind` in this group/version's resource list, if it is
    namespaced and has a scale subresource; else DiscoveryError saying which of these fails."""
    entries = [r for r in (resource_list.get("resources") or []) if isinstance(r, Mapping)]
    names = {str(r.get("name") or "") for r in entries}
    main = [r for r in entries
            if str(r.get("kind") or "") == kind and "/" not in str(r.get("name") or "")]
    if not main:
        kinds = sorted({str(r.get("kind") or "") for r in entries
                        if "/" not in str(r.get("name") or "") and r.get("kind")})
        served = f" (it serves: {', '.join(kinds)})" if kinds else " (it serves no kind)"
        raise DiscoveryError(f"the API server serves no kind {kind} in {api_version}{served}")
    plural = str(main[0].get("name"))
    if not main[0].get("namespaced", True):
        raise DiscoveryError(f"{kind} ({plural}) in {api_version} is cluster-scoped; a target "
                             "is a namespaced workload")
    if f"{plural}/scale" not in names:
        raise DiscoveryError(
            f"{kind} ({plural}) in {api_version} has no scale subresource: it cannot be "
            "scaled as an HPA scales (a CustomResourceDefinition declares one under "
            "`subresources.scale`)")
    return ScaleResource(api_version, kind, plural)


class ApiDiscovery:
    """The resource lists of group/versions, fetched on first use and shared by targets.

    `fetch(api_version)` returns the APIResourceList as JSON or raises (ActuatorError: a 404
    means the group/version is not served at all). Thread-safe: targets are read in parallel.
    """

    def __init__(self, fetch: Callable[[str], Mapping[str, Any]], *,
                 refresh: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._lists: dict[str, tuple[float, Mapping[str, Any]]] = {}

    def resolve(self, api_version: str, kind: str) -> ScaleResource:
        """Where `kind` of `api_version` and its /scale live; DiscoveryError if nowhere, the
        fetch's own error when the list cannot be read."""
        with self._lock:
            cached = self._lists.get(api_version)
        if cached is not None:
            fetched_at, resource_list = cached
            try:
                return scale_resource(resource_list, api_version, kind)
            except DiscoveryError:
                if self._clock() - fetched_at < self._refresh:
                    raise
        resource_list = self._fetch(api_version)
        with self._lock:
            self._lists[api_version] = (self._clock(), resource_list)
        return scale_resource(resource_list, api_version, kind)
