"""The HPA check (#11 item 4): which scaleTargetRef names a workload, and the namespace's HPA
list made at most once per tick and shared by its targets, even when they are checked in
parallel threads. The engine's side (writes stop and resume): tests/unit/test_write.py; on
the real kube-apiserver: tests/integration/test_hpa_e2e.py."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from autoscaler.actuators.hpa import (
    HpaDirectory,
    HpaList,
    api_group,
    conflicting_hpa,
    targets_workload,
)
from autoscaler.errors import NotAllowed


@pytest.mark.parametrize(("api_version", "group"), [
    ("apps/v1", "apps"), ("apps/v1beta1", "apps"), ("v1", ""), ("argoproj.io/v1alpha1",
                                                                "argoproj.io"), ("", ""),
])
def test_api_group(api_version: str, group: str) -> None:
    assert api_group(api_version) == group


DEPLOYMENT = {"api_version": "apps/v1", "kind": "Deployment", "name": "smtp"}


@pytest.mark.parametrize(("ref", "matches"), [
    pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "name": "smtp"}, True,
                 id="same"),
    pytest.param({"apiVersion": "apps/v1beta2", "kind": "Deployment", "name": "smtp"}, True,
                 id="other-version-same-group"),
    pytest.param({"kind": "Deployment", "name": "smtp"}, True, id="no-apiversion-assumed"),
    pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "name": "imap"}, False,
                 id="other-name"),
    pytest.param({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "smtp"}, False,
                 id="other-kind"),
    pytest.param({"apiVersion": "argoproj.io/v1alpha1", "kind": "Deployment", "name": "smtp"},
                 False, id="other-group"),
    pytest.param({}, False, id="empty"),
])
def test_targets_workload(ref: dict[str, Any], matches: bool) -> None:
    assert targets_workload(ref, **DEPLOYMENT) is matches


def hpa(name: str, kind: str, target: str, api_version: str = "apps/v1") -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind,
                                        "name": target}}}


@pytest.mark.parametrize(("hpas", "found"), [
    pytest.param([], None, id="none"),
    pytest.param([hpa("a", "Deployment", "imap"), hpa("b", "StatefulSet", "smtp")], None,
                 id="others-only"),
    pytest.param([hpa("a", "Deployment", "imap"), hpa("keda-hpa-smtp", "Deployment", "smtp")],
                 "keda-hpa-smtp", id="keda-made"),
    pytest.param([{"spec": None}, "junk", hpa("c", "Deployment", "smtp")], "c",
                 id="junk-skipped"),
])
def test_conflicting_hpa(hpas: list[Any], found: str | None) -> None:
    assert conflicting_hpa(hpas, **DEPLOYMENT) == found


class Lister:
    """Counts list calls per namespace; each call waits on `gate` so threads pile up."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.gate = threading.Event()
        self.error = error

    def __call__(self, namespace: str) -> HpaList:
        self.calls[namespace] += 1
        self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return [hpa(f"{namespace}-hpa", "Deployment", "smtp")]


def check_in_parallel(directory: HpaDirectory,
                      namespaces: list[str]) -> tuple[list[threading.Thread], list[Any]]:
    """Every namespace listed from its own thread at once, as the engine's targets do."""
    results: list[Any] = [None] * len(namespaces)

    def check(i: int, ns: str) -> None:
        try:
            results[i] = directory.list(ns)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=check, args=(i, ns)) for i, ns in enumerate(namespaces)]
    for t in threads:
        t.start()
    return threads, results


def test_one_list_per_namespace_per_tick_shared_by_its_targets() -> None:
    lister = Lister()
    directory = HpaDirectory(lister)
    targets = ["mail"] * 5 + ["web"] * 3  # eight targets in two namespaces
    for tick in (1, 2):
        directory.begin_tick()
        threads, results = check_in_parallel(directory, targets)
        lister.gate.set()
        for t in threads:
            t.join(10)
        assert lister.calls == {"mail": tick, "web": tick}
        assert [r[0]["metadata"]["name"] for r in results] == [f"{ns}-hpa" for ns in targets]
        lister.gate.clear()


def test_a_failed_list_is_the_answer_for_the_whole_tick() -> None:
    lister = Lister(NotAllowed("forbidden: list horizontalpodautoscalers.autoscaling"))
    lister.gate.set()
    directory = HpaDirectory(lister)
    for _ in range(3):
        with pytest.raises(NotAllowed):
            directory.list("mail")
    assert lister.calls == {"mail": 1}
    directory.begin_tick()
    lister.error = None
    assert len(directory.list("mail")) == 1 and lister.calls == {"mail": 2}
