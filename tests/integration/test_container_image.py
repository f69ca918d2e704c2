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

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
import yaml
from docker.types import ConfigReference, Healthcheck, Mount, RestartPolicy, ServiceMode

from tests.integration.e2e_support import free_port, swarm_service, wait_for
from tests.realenv import RealEnv

REPO = Path(__file__).resolve().parents[2]
BASE_TAG = "stalwart-autoscaler-base:bookworm"
CONFIG_PATH = "/etc/stalwart-autoscaler/config.yaml"
APP_UID = 10001
SIZE_BUDGET = 300 * 1024 * 1024  # bytes; the image is about 216 MB (base 124 MB, venv 102 MB)
BUILD_TIMEOUT = 1800.0  # debootstrap on a fresh machine, then a build on vfs: generous
RUN_TIMEOUT = 300.0  # one `docker run` (vfs copies the whole image for every container)
HEALTHY_DEADLINE = 240.0
SECOND = 1_000_000_000  # the engine's durations are nanoseconds

pytestmark = pytest.mark.timeout(3600)


def docker_cli() -> str:
    """Debian's docker CLI (the one the test environment installs), else the one on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("no docker CLI: apt-get install docker.io")


def socket_path(realenv: RealEnv) -> Path:
    assert realenv.docker_host.startswith("unix://"), realenv.docker_host
    return Path(realenv.docker_host.removeprefix("unix://"))


def cli_env(realenv: RealEnv, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    env.update(DOCKER_HOST=realenv.docker_host, DOCKER=docker_cli(), **extra)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def pyproject_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# --------------------------------------------------------------------------- the image


@dataclass
class AppImage:
    tag: str
    id: str
    size: int
    build_seconds: float
    created: set[str] = field(default_factory=set)  # image ids the build added
    inputs: tuple[str, str] = ("", "")  # the project wheel's sha256, the revision label


_SHARED: dict[str, Any] = {"image": None, "users": 0}


def _build(docker_client: Any, realenv: RealEnv) -> AppImage:
    env = cli_env(realenv)
    base = run([str(REPO / "scripts" / "base-image")], env, BUILD_TIMEOUT)
    assert base.returncode == 0, f"scripts/base-image failed:\n{base.stderr[-4000:]}"
    assert base.stdout.strip().splitlines()[-1] == BASE_TAG
    before = {img.id for img in docker_client.images.list(all=True)}
    tag = f"stalwart-autoscaler:test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    built = run([str(REPO / "scripts" / "build-image"), "--base", BASE_TAG, "--tag", tag],
                env, BUILD_TIMEOUT)
    seconds = time.monotonic() - started
    created = {img.id for img in docker_client.images.list(all=True)} - before
    image = AppImage(tag, "", 0, seconds, created)
    if built.returncode != 0:
        _remove(docker_client, image)
        pytest.fail(f"scripts/build-image failed:\n{built.stderr[-6000:]}")
    attrs = docker_client.api.inspect_image(tag)
    image.id, image.size = attrs["Id"], int(attrs["Size"])
    image.inputs = build_inputs(attrs)
    print(f"\nbuilt {tag} in {seconds:.0f}s: {image.size / 1e6:.0f} MB")
    return image


def build_inputs(attrs: dict[str, Any]) -> tuple[str, str]:
    """What makes one build differ from the next: the project wheel (the sources, README.md
    included) and the git revision label."""
    wheels = sorted((REPO / "dist" / "wheels").glob("stalwart_autoscaler-*.whl"))
    digest = hashlib.sha256(wheels[-1].read_bytes()).hexdigest() if wheels else ""
    return digest, attrs["Config"]["Labels"].get("org.opencontainers.image.revision", "")


def _remove(docker_client: Any, image: AppImage) -> None:
    """The tag, then every image the build added that nothing tags; the base stays cached.
    Task containers go away a little after their service: retry while the image is in use."""

    def gone() -> bool:
        try:
            docker_client.images.remove(image.tag)
        except docker.errors.ImageNotFound:
            return True
        except docker.errors.APIError:
            return False
        return True

    wait_for(gone, 120, every=2, what=f"removal of {image.tag}")
    for image_id in sorted(image.created):
        with suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            if not docker_client.images.get(image_id).tags:
                docker_client.images.remove(image_id, noprune=False)


@contextmanager
def app_image(docker_client: Any, realenv: RealEnv) -> Iterator[AppImage]:
    """The application image, built once per session and shared (test_swarm_stack uses it
    too); removed when its last user is done."""
    if _SHARED["users"] == 0:
        _SHARED["image"] = _build(docker_client, realenv)
    _SHARED["users"] += 1
    try:
        yield _SHARED["image"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            built, _SHARED["image"] = _SHARED["image"], None
            _remove(docker_client, built)


@pytest.fixture(scope="session")
def image(docker_client: Any, realenv: RealEnv) -> Iterator[AppImage]:
    with app_image(docker_client, realenv) as built:
        yield built


# --------------------------------------------------------------------------- helpers


def task_containers(docker_client: Any, service: Any) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for task in service.tasks():
        cid = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if cid:
            with suppress(docker.errors.NotFound):
                out.append((task, docker_client.containers.get(cid)))
    return out


def healthy_container(docker_client: Any, service: Any) -> Any:
    for task, container in task_containers(docker_client, service):
        container.reload()
        health = container.attrs["State"].get("Health", {}).get("Status")
        if task["DesiredState"] == "running" and health == "healthy":
            return container
    return None


def service_log(docker_client: Any, name: str) -> str:
    chunks = docker_client.api.service_logs(name, stdout=True, stderr=True, follow=False)
    return b"".join(chunks).decode(errors="replace")


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        start = line.find("{")  # a log line may carry a prefix
        if start < 0:
            continue
        with suppress(ValueError):
            value = json.loads(line[start:])
            if isinstance(value, dict):
                out.append(value)
    return out


def get(url: str) -> requests.Response | None:
    session = requests.Session()
    session.trust_env = False
    try:
        with session:
            return session.get(url, timeout=5)
    except requests.RequestException:
        return None


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    response = get(f"{base}/metrics")
    if response is None or response.status_code != 200:
        return 0.0
    total = 0.0
    for line in response.text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


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
            container = wait_for(lambda: healthy_container(docker_client, service),
                                 HEALTHY_DEADLINE, every=1,
                                 what="the task healthy by the image's HEALTHCHECK")
            assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
            base = f"http://{listen}"
            health = get(f"{base}/healthz")
            assert health is not None and health.status_code == 200

            wait_for(lambda: metric(base, "autoscaler_decisions_total", target="smtp") >= 2,
                     60, what="decisions on the metrics port")
            assert metric(base, "autoscaler_target_current_replicas", target="smtp") == 1
            decisions = wait_for(
                lambda: [r for r in json_lines(service_log(docker_client, service.name))
                         if r.get("event") == "decision" and r.get("target") == "smtp"],
                60, every=1, what="decision lines in docker service logs")
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
            wait_for(lambda: next(t["Status"]["State"] for t in service.tasks()
                                  if t["ID"] == task["ID"]) == "complete",
                     60, what="the task complete after SIGTERM")
            assert "stopped" in service_log(docker_client, service.name)
        finally:
            if service is not None:
                service.remove()
            wait_for(lambda: _removed(docker_config), 120, every=1,
                     what="the config removed once the service is gone")


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
