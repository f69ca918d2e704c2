"""The container image, built and run on the real dockerd of the test environment.

No registry is reachable, so the image is built the way the Dockerfile documents for that
case: `scripts/base-image` makes the base with debootstrap (cached as a tarball under
/var/cache/stalwart-autoscaler/base/ and kept on the engine between runs), then
`scripts/build-image` makes the wheels on the host and runs `docker build` with
`BASE_IMAGE=stalwart-autoscaler-base:bookworm`. The application image gets a unique tag and
is removed at the end of the session, with every untagged image its build left behind.

Then: its metadata (non-root user, HEALTHCHECK, ENTRYPOINT, labels), `docker run --read-only`
as uid 10001, and the image as a Swarm service with a read-only root filesystem and its
config from a Docker config object: the task turns healthy by the image's own HEALTHCHECK,
its decisions show in `docker service logs` and on its metrics port, and SIGTERM ends it
cleanly (exit 0). On this engine (--bridge=none) the service uses the `host` network and
listens on a free loopback port, which it is told through AUTOSCALER_LISTEN (the
HEALTHCHECK asks the same address).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml
from docker.types import ConfigReference, Healthcheck, Mount, RestartPolicy, ServiceMode

from tests.support.daemon import http_get
from tests.support.e2e import swarm_service
from tests.support.image import (
    APP_UID,
    BASE_TAG,
    BUILD_TIMEOUT,
    CONFIG_PATH,
    HEALTHY_DEADLINE,
    REPO,
    RUN_TIMEOUT,
    SECOND,
    SIZE_BUDGET,
    AppImage,
    app_image,
    build_inputs,
    cli_env,
    docker_cli,
    healthy_container,
    json_lines,
    metric,
    pyproject_version,
    run,
    service_log,
    socket_path,
    task_containers,
)
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="session")
def image(docker_client: Any, realenv: RealEnv) -> Iterator[AppImage]:
    with app_image(docker_client, realenv) as built:
        yield built


# --------------------------------------------------------------------------- tests


def test_image_metadata_non_root_healthcheck_entrypoint_labels(
        image: AppImage, docker_client: Any) -> None:
    config = docker_client.api.inspect_image(image.tag)["Config"]
    user = config["User"]
    assert user.split(":")[0] == str(APP_UID), f"Config.User {user!r} is not uid {APP_UID}"
    assert config["Entrypoint"] == ["/opt/venv/bin/autoscaler"]
    assert config["Cmd"] == ["run", "--config", CONFIG_PATH]
    assert "9464/tcp" in config["ExposedPorts"]
    health = config["Healthcheck"]
    test = " ".join(health["Test"])
    assert health["Test"][0] == "CMD" and "/healthz" in test and "urllib" in test
    assert "curl" not in test and "wget" not in test
    assert health["Interval"] > 0 and health["Retries"] >= 1
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "stalwart-autoscaler"
    assert labels["org.opencontainers.image.version"] == pyproject_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{40}", labels.get("org.opencontainers.image.revision", "")), \
        "scripts/build-image labels the git revision"


def test_image_size_within_budget(image: AppImage) -> None:
    print(f"\nimage {image.tag}: {image.size / 1e6:.0f} MB, built in {image.build_seconds:.0f}s")
    assert 0 < image.size < SIZE_BUDGET, \
        f"{image.size / 1e6:.0f} MB is over the {SIZE_BUDGET / 1e6:.0f} MB budget"


def test_help_runs_with_a_read_only_root_as_uid_10001(image: AppImage,
                                                      realenv: RealEnv) -> None:
    env = cli_env(realenv)
    done = run([docker_cli(), "run", "--rm", "--read-only", "--user", str(APP_UID),
                "--tmpfs", "/tmp", image.tag, "--help"], env, RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "usage: autoscaler" in done.stdout
    for command in ("run", "explain", "check-config"):
        assert command in done.stdout


def test_the_user_is_unprivileged_and_nothing_in_the_image_is_writable(
        image: AppImage, realenv: RealEnv) -> None:
    script = ("id -u; getent passwd autoscaler | cut -d: -f7; "
              "for d in /opt/venv /etc /usr /; do touch $d/.probe 2>/dev/null && echo W:$d; done; "
              "/opt/venv/bin/python -c 'import docker, kubernetes.client, autoscaler.loop' "
              "&& echo imports-ok")
    done = run([docker_cli(), "run", "--rm", "--entrypoint", "/bin/sh", image.tag, "-c", script],
               cli_env(realenv), RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == str(APP_UID)
    assert lines[1] == "/usr/sbin/nologin"
    assert not [x for x in lines if x.startswith("W:")], f"writable as uid {APP_UID}: {lines}"
    assert "imports-ok" in lines


def test_simulate_in_the_image_says_how_to_get_plots(image: AppImage, realenv: RealEnv) -> None:
    """The image has no plot extra (no matplotlib, no numpy): simulate still runs and says
    how to get plots, instead of a ModuleNotFoundError."""
    script = ("/opt/venv/bin/python -c 'import importlib.util as u; "
              "print([m for m in (\"matplotlib\", \"numpy\") if u.find_spec(m)])' && cd /tmp "
              "&& /opt/venv/bin/autoscaler simulate --no-compare --trace slow-ramp")
    done = run([docker_cli(), "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--entrypoint",
                "/bin/sh", image.tag, "-c", script], cli_env(realenv), RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[]", "matplotlib or numpy is in the image"
    assert "pip install 'stalwart-autoscaler[plot]'" in done.stdout
    assert "Traceback" not in done.stderr


def test_check_config_in_the_image_on_a_read_only_root(image: AppImage,
                                                       realenv: RealEnv) -> None:
    """The config layer (pydantic, PyYAML) works in the image: the stack's example config."""
    config = REPO / "deploy" / "swarm" / "config.yaml"
    done = run([docker_cli(), "run", "--rm", "--read-only",
                "-v", f"{config}:{CONFIG_PATH}:ro", image.tag, "check-config", CONFIG_PATH],
               cli_env(realenv), RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout
    bad = run([docker_cli(), "run", "--rm", "--read-only", image.tag, "check-config",
               "/nonexistent.yaml"], cli_env(realenv), RUN_TIMEOUT)
    assert bad.returncode == 2, (bad.stdout, bad.stderr)


def test_as_a_swarm_service_healthy_deciding_and_stopping_cleanly(
        image: AppImage, docker_client: Any, realenv: RealEnv, tmp_path: Path) -> None:
    port = free_port()
    listen = f"127.0.0.1:{port}"
    sock = socket_path(realenv)
    gid = sock.stat().st_gid
    suffix = uuid.uuid4().hex[:8]
    with swarm_service(docker_client, realenv.busybox_image) as target:
        config_text = yaml.safe_dump({
            "evaluation_interval": "2s",
            "dry_run": True,  # decisions are logged and exported; this test writes nothing
            "prometheus": {"url": realenv.prometheus_url, "timeout": "5s",
                           "scrape_interval": "1s"},
            "listen": listen,
            "leader_election": {"mode": "none"},
            "targets": [{
                "name": "smtp", "backend": "swarm", "service": target.name,
                "min_replicas": 1, "max_replicas": 3,
                "policies": [{"type": "threshold", "name": "steady", "query": "vector(50)",
                              "scale_up_above": 70, "scale_down_below": 35}],
            }],
        }, sort_keys=False)
        docker_config = docker_client.configs.create(
            name=f"autoscaler-image-test-{suffix}", data=config_text.encode())
        service = None
        try:
            service = docker_client.services.create(
                image.tag, name=f"autoscaler-image-test-{suffix}",
                configs=[ConfigReference(docker_config.id, docker_config.name,
                                         filename=CONFIG_PATH, uid=str(APP_UID),
                                         gid=str(gid), mode=0o400)],
                mounts=[Mount("/var/run/docker.sock", str(sock), type="bind"),
                        Mount("/tmp", None, type="tmpfs")],
                networks=["host"],  # --bridge=none: the engine's host network
                read_only=True, user=f"{APP_UID}:{gid}",
                env=[f"AUTOSCALER_LISTEN={listen}"],
                # No test: the image's own HEALTHCHECK, checked every 2 s instead of 30 s.
                healthcheck=Healthcheck(interval=2 * SECOND, timeout=5 * SECOND, retries=3,
                                        start_period=60 * SECOND),
                stop_grace_period=30 * SECOND,
                restart_policy=RestartPolicy(condition="on-failure"),
                mode=ServiceMode("replicated", replicas=1))
            container = wait_until("the task healthy by the image's HEALTHCHECK",
                                   lambda: healthy_container(docker_client, service),
                                   HEALTHY_DEADLINE, 1)
            assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
            base = f"http://{listen}"
            health = http_get(f"{base}/healthz")
            assert health is not None and health.status_code == 200

            wait_until("decisions on the metrics port",
                       lambda: metric(base, "autoscaler_decisions_total", target="smtp") >= 2, 60)
            assert metric(base, "autoscaler_target_current_replicas", target="smtp") == 1
            decisions = wait_until(
                "decision lines in docker service logs",
                lambda: [r for r in json_lines(service_log(docker_client, service.name))
                         if r.get("event") == "decision" and r.get("target") == "smtp"], 60, 1)
            # `current` was read through the mounted socket by uid 10001.
            assert decisions[-1]["current"] == 1
            assert decisions[-1]["outcome"] == "hold"

            container.kill(signal="SIGTERM")
            stopped = time.monotonic()
            status = container.wait(timeout=60)
            assert status["StatusCode"] == 0, service_log(docker_client, service.name)[-3000:]
            assert time.monotonic() - stopped < 30  # well inside the grace period
            # on-failure: a clean exit completes the task, Swarm does not restart it.
            task = next(t for t, c in task_containers(docker_client, service)
                        if c.id == container.id)
            wait_until("the task complete after SIGTERM",
                       lambda: next(t["Status"]["State"] for t in service.tasks()
                                  if t["ID"] == task["ID"]) == "complete", 60)
            assert "stopped" in service_log(docker_client, service.name)
        finally:
            if service is not None:
                service.remove()
            wait_until("the config removed once the service is gone",
                       lambda: _removed(docker_config), 120, 1)


def _removed(obj: Any) -> bool:
    try:
        obj.remove()
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False  # still in use by a task that is going away
    return True


def test_rebuild_hits_the_cache(image: AppImage, docker_client: Any, realenv: RealEnv) -> None:
    """The base is not made again, the first stage (the user and all the image's metadata)
    comes from the cache whatever changed, and with the same sources and revision every layer
    does (the wheel is byte-identical thanks to a fixed SOURCE_DATE_EPOCH): same image id.
    Other people's edits or commits between the two builds only relax the last check."""
    env = cli_env(realenv)
    base = run([str(REPO / "scripts" / "base-image")], env, BUILD_TIMEOUT)
    assert base.returncode == 0 and "nothing to do" in base.stderr, base.stderr
    before = {img.id for img in docker_client.images.list(all=True)}
    started = time.monotonic()
    again = run([str(REPO / "scripts" / "build-image"), "--base", BASE_TAG, "--tag", image.tag],
                env, BUILD_TIMEOUT)
    seconds = time.monotonic() - started
    image.created |= {img.id for img in docker_client.images.list(all=True)} - before
    assert again.returncode == 0, again.stderr[-4000:]
    attrs = docker_client.api.inspect_image(image.tag)
    print(f"\ncached rebuild: {seconds:.0f}s (first build {image.build_seconds:.0f}s)")
    first_stage = again.stderr.split("AS build")[0]
    assert first_stage.count("Using cache") >= 8, first_stage[-3000:]
    if build_inputs(attrs) == image.inputs:
        assert attrs["Id"] == image.id
    else:
        print("sources or revision changed during the session: image id not compared")
    image.id = attrs["Id"]
