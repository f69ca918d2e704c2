"""Where the real test environment is: the values `scripts/testenv up` writes.

`scripts/testenv up` starts a real Prometheus, a real dockerd in swarm mode and a real
etcd + kube-apiserver on 127.0.0.1 and records how to reach them in `.testenv/env.json` at the
repository root. `load_realenv()` reads that file; the environment variable
`AUTOSCALER_TESTENV` may point at another `env.json` (or at the directory holding it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["ENV_VAR", "REQUIRED_KEYS", "RealEnv", "default_env_path", "load_realenv"]

ENV_VAR = "AUTOSCALER_TESTENV"

REQUIRED_KEYS: tuple[str, ...] = (
    "PROMETHEUS_URL",
    "PROMETHEUS_FILE_SD_DIR",
    "DOCKER_HOST",
    "KUBECONFIG",
    "KUBE_API_URL",
    "KUBE_CA_FILE",
    "KUBE_ADMIN_TOKEN",
    "KUBE_USER_A_TOKEN",
    "KUBE_USER_B_TOKEN",
    "BUSYBOX_IMAGE",
)

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RealEnv:
    """How to reach the real components (all on 127.0.0.1)."""

    prometheus_url: str
    """Base URL of Prometheus, e.g. ``http://127.0.0.1:41234`` (lifecycle + admin API on)."""
    prometheus_file_sd_dir: Path
    """Write ``*.json`` file_sd target files here; job ``file_sd`` scrapes them every 1 s."""
    docker_host: str
    """``unix://...`` socket of the test dockerd (a swarm manager)."""
    kubeconfig: Path
    """Admin kubeconfig (user ``admin`` in ``system:masters``)."""
    kube_api_url: str
    """``https://127.0.0.1:PORT`` of kube-apiserver."""
    kube_ca_file: Path
    """CA that signed the API server's certificate."""
    kube_admin_token: str = field(repr=False)
    kube_user_a_token: str = field(repr=False)
    """Static token of user ``rbac-user-a`` (no groups: RBAC denies by default)."""
    kube_user_b_token: str = field(repr=False)
    """Static token of user ``rbac-user-b`` (no groups: RBAC denies by default)."""
    busybox_image: str
    """Local image made from Debian's static busybox (``sh``, ``sleep``, ``wget``, ``httpd``...)."""
    etcd_url: str = ""
    kubectl: str = ""
    """Path of a working kubectl, when the environment found or installed one."""
    testenv_dir: Path | None = None
    raw: MappingProxyType[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    """Every key of env.json as written (contains tokens: not shown in repr)."""

    def environ(self) -> dict[str, str]:
        """The env.json values as environment variables (e.g. for a subprocess)."""
        return dict(self.raw)


def default_env_path() -> Path:
    """`$AUTOSCALER_TESTENV` (a file, or a directory holding env.json), else .testenv/env.json."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        return path / "env.json" if path.is_dir() else path
    return _REPO_ROOT / ".testenv" / "env.json"


def load_realenv(path: Path | None = None) -> RealEnv:
    """Read the environment file written by `scripts/testenv up`.

    Raises RuntimeError when the file is missing or incomplete.
    """
    env_path = path if path is not None else default_env_path()
    if not env_path.is_file():
        raise RuntimeError(
            f"real test environment not found ({env_path} is missing): "
            "run `scripts/testenv up` first (as root)"
        )
    data: Any = json.loads(env_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RuntimeError(f"{env_path}: expected a JSON object; rerun `scripts/testenv up`")
    values = {str(k): str(v) for k, v in data.items()}
    missing = [key for key in REQUIRED_KEYS if not values.get(key)]
    if missing:
        raise RuntimeError(f"{env_path} lacks {', '.join(missing)}: rerun `scripts/testenv up`")
    testenv_dir = values.get("TESTENV_DIR")
    return RealEnv(
        prometheus_url=values["PROMETHEUS_URL"],
        prometheus_file_sd_dir=Path(values["PROMETHEUS_FILE_SD_DIR"]),
        docker_host=values["DOCKER_HOST"],
        kubeconfig=Path(values["KUBECONFIG"]),
        kube_api_url=values["KUBE_API_URL"],
        kube_ca_file=Path(values["KUBE_CA_FILE"]),
        kube_admin_token=values["KUBE_ADMIN_TOKEN"],
        kube_user_a_token=values["KUBE_USER_A_TOKEN"],
        kube_user_b_token=values["KUBE_USER_B_TOKEN"],
        busybox_image=values["BUSYBOX_IMAGE"],
        etcd_url=values.get("ETCD_URL", ""),
        kubectl=values.get("KUBECTL", ""),
        testenv_dir=Path(testenv_dir) if testenv_dir else None,
        raw=MappingProxyType(values),
    )
