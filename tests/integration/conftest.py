"""Fixtures for tests against the real components started by `scripts/testenv up`.

Every test collected under tests/integration gets the `realenv` marker, so
`pytest -m "not realenv"` runs without the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import kubernetes.client
import kubernetes.config
import pytest

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent.parent
if str(_REPO_ROOT) not in sys.path:  # make `tests.support` importable
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support.realenv import RealEnv, load_realenv  # noqa: E402
from tests.support.swarm import ServiceFactory, service_factory  # noqa: E402

# Everything here is on 127.0.0.1: never route it through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    os.environ[_var] = ",".join(
        [*_hosts, *(h for h in ("127.0.0.1", "localhost") if h not in _hosts)]
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.realenv)


@pytest.fixture(scope="session")
def realenv() -> RealEnv:
    return load_realenv()


@pytest.fixture(scope="session")
def prometheus_url(realenv: RealEnv) -> str:
    return realenv.prometheus_url


@pytest.fixture(scope="session")
def docker_client(realenv: RealEnv) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=realenv.docker_host, timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kube_api(realenv: RealEnv) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(realenv.kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made by openssl."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def make_service(docker_client: docker.DockerClient,
                 realenv: RealEnv) -> Iterator[ServiceFactory]:
    """Create a busybox service (`sleep 100000`); every one is removed at the end."""
    with service_factory(docker_client, realenv.busybox_image) as make:
        yield make
