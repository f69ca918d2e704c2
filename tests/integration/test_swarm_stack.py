"""deploy/swarm/stack.yml deployed with `docker stack deploy` on the real test swarm, scaling
a real service.

The stack file is deployed as written; only its variables change:
- AUTOSCALER_IMAGE: the image built for this session (tests/support/image.py: app_image);
- AUTOSCALER_CONFIG: a config that points at the shared Prometheus and at a busybox service
  made by the test, whose demand comes from the Stalwart emulator registered in Prometheus;
- MONITORING_NETWORK=host: this engine runs with --bridge=none and no iptables, where an
  overlay network is created but carries no traffic; the engine's `host` network works, so
  the daemon reaches Prometheus and serves its metrics on a free loopback port
  (AUTOSCALER_LISTEN). Production attaches to an overlay network instead;
- DOCKER_SOCKET / DOCKER_GID: the test engine's socket and its group;
- PROMETHEUS_TOKEN_SECRET / CONFIG_VERSION: names unique to the test.
The daemon runs in leader_election mode swarm, as the stack's example config does; on this
one-manager swarm its task is on the Raft leader. `docker stack rm` and the removal of the
secret end the test; it checks that the stack's config went with the stack.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml

from autoscaler import __version__
from tests.support.daemon import http_get
from tests.support.e2e import (
    FAST_BEHAVIOR,
    inflow_capacity,
    prom_value,
    registered,
    spec_replicas,
    swarm_service,
)
from tests.support.image import (
    APP_UID,
    CONFIG_PATH,
    HEALTHY_DEADLINE,
    REPO,
    AppImage,
    app_image,
    cli_env,
    docker_cli,
    healthy_container,
    json_lines,
    metric,
    service_log,
    socket_path,
)
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until
from tools.emulator import Emulator, SwarmTasks

STACK_FILE = REPO / "deploy" / "swarm" / "stack.yml"
SERVICE_KEY = "stalwart-autoscaler"  # the service's name in the stack file
DEMAND = 16000.0  # emails/hour: the capacity policy asks for ceil(1.6 x 1.5) = 3 instances
WANTED = 3
SCALE_DEADLINE = 180.0  # scrape 1 s + rate window 10 s + ticks of 2 s + tasks on vfs
CLI_TIMEOUT = 300.0

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="session")
def stack_image(docker_client: Any, realenv: RealEnv) -> Iterator[AppImage]:
    with app_image(docker_client, realenv) as built:
        yield built


def docker_run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker_cli(), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT, check=False)


@contextmanager
def deployed(name: str, env: dict[str, str], docker_client: Any) -> Iterator[Any]:
    """`docker stack deploy` of the stack file; `docker stack rm` after, waiting until its
    service and config are gone."""
    done = docker_run(["stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), name],
                  env)
    try:
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        yield docker_client.services.get(f"{name}_{SERVICE_KEY}")
    finally:
        removed = docker_run(["stack", "rm", name], env)
        assert removed.returncode == 0, removed.stderr
        label = f"com.docker.stack.namespace={name}"
        wait_until(f"stack {name} removed",
                   lambda: not docker_client.services.list(filters={"label": label})
                 and not docker_client.configs.list(filters={"label": label}), 120, 1)


def test_stack_file_is_what_the_deployment_needs() -> None:
    """The production shape, read from the file itself (the deploy below proves it works)."""
    stack = yaml.safe_load(STACK_FILE.read_text())
    svc = stack["services"][SERVICE_KEY]
    assert svc["image"] == f"${{AUTOSCALER_IMAGE:-stalwart-autoscaler:{__version__}}}"
    assert svc["user"].startswith(f"{APP_UID}:")
    assert svc["read_only"] is True
    assert svc["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert svc["deploy"]["mode"] == "global"
    assert svc["deploy"]["restart_policy"]["condition"] == "any"
    assert "healthcheck" in svc
    assert [v["target"] for v in svc["volumes"] if v["type"] == "bind"] == \
        ["/var/run/docker.sock"]
    assert [c["target"] for c in svc["configs"]] == [CONFIG_PATH]
    assert [s["target"] for s in svc["secrets"]] == ["prometheus_token"]
    assert stack["secrets"]["prometheus_token"]["external"] is True
    example = yaml.safe_load((STACK_FILE.parent / "config.yaml").read_text())
    assert example["leader_election"]["mode"] == "swarm"
    assert example["prometheus"]["bearer_token_file"] == "/run/secrets/prometheus_token"
    assert {t["service"] for t in example["targets"]} == \
        {"mail_stalwart-smtp", "mail_stalwart-imap"}


def test_stack_without_docker_gid_is_refused(realenv: RealEnv) -> None:
    env = cli_env(realenv)
    env.pop("DOCKER_GID", None)
    name = f"as-nogid-{uuid.uuid4().hex[:6]}"
    done = docker_run(["stack", "deploy", "-c", str(STACK_FILE), name], env)
    if done.returncode == 0:  # it must not have deployed; if it did, take it away again
        docker_run(["stack", "rm", name], env)
    assert done.returncode != 0
    assert "DOCKER_GID" in done.stderr


def test_deployed_stack_scales_a_real_service(
        stack_image: AppImage, docker_client: Any, realenv: RealEnv, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    stack = f"as-{suffix}"
    port = free_port()
    listen = f"127.0.0.1:{port}"
    sock = socket_path(realenv)
    with swarm_service(docker_client, realenv.busybox_image) as target, \
            Emulator(SwarmTasks(target.name, client=docker_client), demand=DEMAND,
                     startup_delay=1, poll=0.5) as emulator, \
            registered(realenv, emulator) as cluster:
        capacity = inflow_capacity(cluster)
        wait_until("the emulator's inflow in Prometheus",
                   lambda: (prom_value(realenv.prometheus_url, capacity["query"]) or 0) >= 14000,
                   90)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "evaluation_interval": "2s",
            "dry_run": False,
            "prometheus": {"url": realenv.prometheus_url, "timeout": "5s",
                           "scrape_interval": "1s",
                           "bearer_token_file": "/run/secrets/prometheus_token"},
            "listen": listen,
            "leader_election": {"mode": "swarm"},
            "targets": [{
                "name": "smtp", "backend": "swarm", "service": target.name,
                "min_replicas": 1, "max_replicas": 5, "cooldown": {"up": "0s", "down": "0s"},
                "behavior": FAST_BEHAVIOR, "policies": [capacity],
            }],
        }, sort_keys=False))
        secret = docker_client.secrets.create(name=f"autoscaler-stack-token-{suffix}",
                                              data=b"test-token\n")
        env = cli_env(realenv, AUTOSCALER_IMAGE=stack_image.tag,
                      AUTOSCALER_CONFIG=str(config), CONFIG_VERSION=suffix,
                      PROMETHEUS_TOKEN_SECRET=secret.name, MONITORING_NETWORK="host",
                      AUTOSCALER_LISTEN=listen, DOCKER_SOCKET=str(sock),
                      DOCKER_GID=str(sock.stat().st_gid))
        try:
            assert spec_replicas(docker_client, target.name) == 1
            with deployed(stack, env, docker_client) as service:
                spec = service.attrs["Spec"]
                task = spec["TaskTemplate"]
                container_spec = task["ContainerSpec"]
                assert "Global" in spec["Mode"]
                assert task["Placement"]["Constraints"] == ["node.role == manager"]
                assert container_spec["ReadOnly"] is True
                assert container_spec["User"] == f"{APP_UID}:{sock.stat().st_gid}"
                assert container_spec["Image"].startswith(stack_image.tag)
                assert [c["File"]["Name"] for c in container_spec["Configs"]] == [CONFIG_PATH]
                assert [s["SecretName"] for s in container_spec["Secrets"]] == [secret.name]

                started = time.monotonic()
                wait_until("the stack's task healthy",
                           lambda: healthy_container(docker_client, service), HEALTHY_DEADLINE, 1)
                healthy = time.monotonic() - started
                wait_until(f"the deployed daemon scaling {target.name} to {WANTED}",
                           lambda: spec_replicas(docker_client, target.name) == WANTED,
                           SCALE_DEADLINE, 1)
                print(f"\nstack {stack}: task healthy after {healthy:.0f}s, "
                      f"{target.name} at {WANTED} after {time.monotonic() - started:.0f}s")

                base = f"http://{listen}"
                ready = http_get(f"{base}/readyz")
                assert ready is not None and ready.json()["role"] == "leader", \
                    ready.text if ready is not None else "no answer"
                assert metric(base, "autoscaler_leader") == 1
                assert metric(base, "autoscaler_scale_writes_total", target="smtp",
                              direction="up") >= 1
                # The log reaches `docker service logs` a little after the write.
                written = wait_until(
                    "a written decision in docker service logs",
                    lambda: [r for r in json_lines(service_log(docker_client, service.name))
                             if r.get("event") == "decision" and r.get("written")], 60, 1)
                assert written[-1]["desired"] == WANTED
                labels = docker_client.api.inspect_service(target.name)["Spec"]["Labels"]
                assert labels["autoscaler.last-scale-direction"] == "up"
            # `docker stack rm` took the stack's config with it.
            assert not docker_client.configs.list(
                filters={"name": f"stalwart-autoscaler-config-{suffix}"})
        finally:
            wait_until("the test's secret removed", lambda: _removed(secret), 120, 1)
        assert not docker_client.secrets.list(filters={"name": secret.name})


def _removed(obj: Any) -> bool:
    try:
        obj.remove()
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False
    return True

