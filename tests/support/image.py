"""The application container image: built once per session from this checkout by
`scripts/base-image` and `scripts/build-image`, shared by the image and stack tests, and the
helpers that read what its containers do (health, logs, metrics)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from autoscaler import __version__
from tests.support.daemon import http_get
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
BASE_TAG = "stalwart-autoscaler-base:bookworm"
CONFIG_PATH = "/etc/stalwart-autoscaler/config.yaml"
APP_UID = 10001
SIZE_BUDGET = 300 * 1024 * 1024  # bytes; the image is about 216 MB (base 124 MB, venv 102 MB)
BUILD_TIMEOUT = 1800.0  # debootstrap on a fresh machine, then a build on vfs: generous
RUN_TIMEOUT = 300.0  # one `docker run` (vfs copies the whole image for every container)
HEALTHY_DEADLINE = 240.0
SECOND = 1_000_000_000  # the engine's durations are nanoseconds

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
    """The project's version (its one source, which pyproject.toml reads too)."""
    return __version__


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

    wait_until(f"removal of {image.tag}", gone, 120, 2)
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


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    response = http_get(f"{base}/metrics")
    if response is None or response.status_code != 200:
        return 0.0
    total = 0.0
    for line in response.text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total
