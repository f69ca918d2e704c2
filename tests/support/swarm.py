"""Swarm services for the adapter tests: made from the test image, removed afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
from docker.types import ServiceMode

from autoscaler.model import TargetState

__all__ = ["STACK_LABELS", "STATE", "TASK_DEADLINE", "ServiceFactory", "container_ids",
           "service_factory", "spec_of"]

TASK_DEADLINE = 180.0  # tasks reach `running` in a few seconds here; vfs copies are slow
STACK_LABELS = {"com.docker.stack.namespace": "mail", "owner": "ops"}
STATE = TargetState(last_scale_time=1_700_000_000.5, last_scale_direction=1, last_written=3,
                    recommendations=((1_699_999_985.0, 2), (1_700_000_000.5, 3)),
                    events=((1_700_000_000.5, 1),))


def spec_of(client: docker.DockerClient, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = client.api.inspect_service(name)["Spec"]
    return spec


def container_ids(client: docker.DockerClient, **filters: str) -> list[str]:
    """The ids of the containers (running or not) that match `filters`.

    docker-py's `containers.list` inspects every container it lists, and raises NotFound
    when one (a removed service's task) goes away between the list and the inspect; the
    raw list call reads the ids in one request, so waiting for "none left" cannot race.
    """
    return [c["Id"] for c in client.api.containers(all=True, filters=filters)]


ServiceFactory = Callable[..., str]


@contextlib.contextmanager
def service_factory(docker_client: docker.DockerClient,
                    image: str) -> Iterator[ServiceFactory]:
    """Create busybox services (`sleep 100000`); every one is removed on leaving."""
    names: list[str] = []

    def make(replicas: int = 1, labels: dict[str, str] | None = None,
             mode: str = "replicated") -> str:
        name = f"as-test-{uuid.uuid4().hex[:12]}"
        service_mode = ServiceMode(mode, replicas=replicas if mode == "replicated" else None)
        names.append(name)
        docker_client.services.create(
            image, ["sleep", "100000"], name=name, mode=service_mode,
            labels={**STACK_LABELS, **(labels or {})},
            stop_grace_period=1_000_000_000)  # sleep ignores SIGTERM: don't wait 10 s
        return name

    try:
        yield make
    finally:
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_service(name)
