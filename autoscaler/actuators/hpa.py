"""Is a HorizontalPodAutoscaler also scaling this workload? Checked at every tick.

Two controllers writing one replica count fight forever, so a workload that an HPA targets
(a KEDA ScaledObject creates one, so it is covered) is read but never written while the HPA
exists, and written again from the first tick after it is gone. The HPAs of a namespace are
listed at most once per tick (`HpaDirectory`), shared by every target in that namespace: the
cost is one list per namespace per tick, whatever the number of targets.

No I/O here: the list call is passed in, so the sharing and the matching are table-tested.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["HpaDirectory", "api_group", "conflicting_hpa", "targets_workload"]

HpaList = Sequence[Mapping[str, Any]]


def api_group(api_version: str) -> str:
    """`apps/v1` → `apps`; the core group's `v1` → "" (an object's identity is its group,
    kind, namespace and name: the version is only how it is served)."""
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def targets_workload(ref: Mapping[str, Any], *, api_version: str, kind: str,
                     name: str) -> bool:
    """Whether an HPA's `spec.scaleTargetRef` names this workload: same API group (from its
    apiVersion), kind and name. The version may differ (`apps/v1beta1` and `apps/v1` are one
    Deployment), so comparing the group never misses a conflict; a reference without an
    apiVersion is taken to mean this workload when kind and name match."""
    if str(ref.get("kind") or "") != kind or str(ref.get("name") or "") != name:
        return False
    theirs = str(ref.get("apiVersion") or "")
    return not theirs or api_group(theirs) == api_group(api_version)


def conflicting_hpa(hpas: HpaList, *, api_version: str, kind: str, name: str) -> str | None:
    """The name of the first HPA that scales this workload, or None."""
    for hpa in hpas:
        if not isinstance(hpa, Mapping):
            continue
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if isinstance(ref, Mapping) and targets_workload(ref, api_version=api_version,
                                                         kind=kind, name=name):
            return str((hpa.get("metadata") or {}).get("name") or "?")
    return None


class HpaDirectory:
    """The HPAs of each namespace, listed once per tick and shared by its targets.

    `fetch(namespace)` lists them (all pages) or raises. Its answer, or its error, stands
    for the whole tick: targets of one namespace checked in parallel wait for the one call
    instead of making their own. `begin_tick()` forgets every answer.
    """

    def __init__(self, fetch: Callable[[str], HpaList]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._namespace_locks: dict[str, threading.Lock] = {}
        self._answers: dict[str, HpaList | BaseException] = {}

    def begin_tick(self) -> None:
        with self._lock:
            self._answers.clear()

    def list(self, namespace: str) -> HpaList:
        """This tick's HPAs of `namespace` (the error of this tick's list, raised again)."""
        with self._lock:
            namespace_lock = self._namespace_locks.setdefault(namespace, threading.Lock())
        with namespace_lock:
            with self._lock:
                answer = self._answers.get(namespace)
            if answer is None:
                try:
                    answer = list(self._fetch(namespace))
                except Exception as exc:
                    answer = exc
                with self._lock:
                    self._answers[namespace] = answer
        if isinstance(answer, BaseException):
            raise answer
        return answer
