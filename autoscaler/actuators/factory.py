"""Actuators by target: backend libraries are imported only when a target uses them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from autoscaler.actuators.base import Actuator
from autoscaler.config import TargetConfig
from autoscaler.model import TargetState, TargetStatus

if TYPE_CHECKING:
    from autoscaler.actuators.swarm import ServiceDirectory

log = logging.getLogger("autoscaler.actuators")


class BackendClients:
    """One Docker client and one Kubernetes API client per process, created on first use."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout  # per backend call; the CLI keeps it inside the tick budget
        self._docker: Any = None
        self._kube: Any = None
        self._directory: ServiceDirectory | None = None  # with the Docker client
        self._hpas: Any = None  # hpa.HpaDirectory, with the Kubernetes client
        self._discovery: Any = None  # discovery.ApiDiscovery, with the Kubernetes client

    def swarm_directory(self) -> ServiceDirectory:
        """The Swarm service list shared by every Swarm target (read once per tick)."""
        if self._directory is None:
            from autoscaler.actuators.swarm import ServiceDirectory

            self._directory = ServiceDirectory(self.docker())
        return self._directory

    def begin_tick(self) -> None:
        """A tick starts: shared reads of the previous one are no longer current."""
        if self._directory is not None:
            self._directory.begin_tick()
        if self._hpas is not None:
            self._hpas.begin_tick()

    def hpa_directory(self) -> Any:
        """The HPAs of each namespace, listed once per tick for every Kubernetes target."""
        if self._hpas is None:
            from autoscaler.actuators.hpa import HpaDirectory
            from autoscaler.actuators.kubernetes import hpa_lister

            self._hpas = HpaDirectory(hpa_lister(self.kubernetes(), self.timeout))
        return self._hpas

    def api_discovery(self) -> Any:
        """Kind → resource for `scale_target_ref` targets, cached for every target."""
        if self._discovery is None:
            from autoscaler.actuators.discovery import ApiDiscovery
            from autoscaler.actuators.kubernetes import discovery_fetcher

            self._discovery = ApiDiscovery(discovery_fetcher(self.kubernetes(), self.timeout))
        return self._discovery

    def docker(self) -> Any:
        if self._docker is None:
            from autoscaler.actuators.swarm import swarm_client

            self._docker = swarm_client(self.timeout)
        return self._docker

    def kubernetes(self) -> Any:
        if self._kube is None:
            from autoscaler.kube import kubernetes_api_client

            self._kube = kubernetes_api_client()
        return self._kube

    def close(self) -> None:
        # docker.DockerClient and kubernetes.client.ApiClient both have close()
        for client in (self._docker, self._kube):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("closing a backend client failed", exc_info=True)


def make_actuator(target: TargetConfig, clients: BackendClients) -> Actuator:
    """The actuator for a target's backend (config validation guarantees its fields)."""
    if target.backend == "swarm":
        from autoscaler.actuators.swarm import SwarmActuator

        return SwarmActuator(clients.docker(), str(target.service), clients.swarm_directory())
    from autoscaler.actuators.kubernetes import KubernetesActuator

    if target.scale_target_ref is not None:
        ref = target.scale_target_ref
        return KubernetesActuator(clients.kubernetes(), ref.kind, str(target.namespace),
                                  ref.name, api_version=ref.api_version,
                                  timeout=clients.timeout, hpas=clients.hpa_directory(),
                                  discovery=clients.api_discovery())
    kind: Literal["deployment", "statefulset"] = (
        "deployment" if target.deployment else "statefulset"
    )
    name = target.deployment or target.statefulset
    return KubernetesActuator(clients.kubernetes(), kind, str(target.namespace), str(name),
                              timeout=clients.timeout, hpas=clients.hpa_directory())


class DryRunActuator(Actuator):
    """Reads through to the real backend; writes nothing, ever: `scale` and `record_event`
    (an event is a write too) have no path to the backend. The enforcement under the write
    gate: a dry run cannot write even if the gate were wrong."""

    def __init__(self, inner: Actuator) -> None:
        self.inner = inner
        self.would_have: list[tuple[int, TargetState]] = []

    @property
    def description(self) -> str:
        return f"{self.inner.description} (dry-run)"

    def status(self) -> TargetStatus:
        return self.inner.status()

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        self.would_have.append((replicas, state))

    def record_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        return None

    def hpa_conflict(self) -> str | None:
        return self.inner.hpa_conflict()  # a read: a dry run shows the conflict too


if TYPE_CHECKING:  # the static check that each actuator satisfies the Protocol (mypy)
    from autoscaler.actuators.kubernetes import KubernetesActuator
    from autoscaler.actuators.swarm import SwarmActuator

    def _conforms(swarm: SwarmActuator, kube: KubernetesActuator,
                  dry: DryRunActuator) -> tuple[Actuator, Actuator, Actuator]:
        return swarm, kube, dry
