"""How the full run spreads the tests over pytest-xdist workers (`--dist loadscope`).

An integration module is one unit of work, kept whole on one worker: its module-scoped
fixtures (a Prometheus, a namespace, a swarm) start once, and its tests run in order. Modules
that share a global resource form one unit (SHARED). Every other test is a unit of its own.
The long units are handed out first (LONG_FIRST), so that none of them starts last and ends
the run alone. (xdist's own `loadgroup` does not group on pytest 9.2: pytest-xdist#1386.)
"""

from __future__ import annotations

from typing import Any

import pytest

INTEGRATION = "tests/integration/"

# Modules that must share a worker: one swarm_cluster at a time (a fixed subnet and
# /tmp/asfo-swarm); the application image, built once per worker session, is shared.
SHARED = {
    "tests/integration/test_faults_docker.py": "swarm_cluster",
    "tests/integration/test_swarm_failover.py": "swarm_cluster",
    "tests/integration/test_container_image.py": "app_image",
    "tests/integration/test_swarm_stack.py": "app_image",
}

# Units that take minutes, longest first (from `--durations` of a full run on 2 cores: the
# image build alone is most of the run); the rest follow in file order.
LONG_FIRST = [
    "app_image",
    "tests/integration/test_secrets.py",
    "tests/integration/test_kubernetes_manifests.py",
    "tests/integration/test_emulator.py",
    "tests/integration/test_packaging_install.py",
    "tests/integration/test_metrics_backends.py",
    "tests/smoke/test_bench_smoke_core.py",
    "tests/integration/test_faults_kubernetes.py",
    "tests/integration/test_faults_prometheus.py",
    "swarm_cluster",
    "tests/integration/test_faults_daemon.py",
    "tests/integration/test_loop_e2e.py",
    "tests/integration/test_lease_failover.py",
    "tests/integration/test_daemon.py",
    "tests/integration/test_bench_smoke_live.py",
    "tests/integration/test_reliability_soak.py",
    "tests/integration/test_docker_api_proxy.py",
]


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to (see the module docstring)."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(INTEGRATION):
        return SHARED.get(path, path)
    return nodeid


def rank(nodeid: str) -> int:
    """Where a test's unit (or, for a unit of one test, its module) stands in LONG_FIRST."""
    for key in (unit_of(nodeid), nodeid.split("::", 1)[0]):
        if key in LONG_FIRST:
            return LONG_FIRST.index(key)
    return len(LONG_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the long units first (a stable sort: file order otherwise)."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: rank(item.nodeid))


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - xdist is a dev dependency
    pass
else:

    class UnitScheduling(LoadScopeScheduling):
        """`--dist loadscope` with the units of `unit_of`, in collection order."""

        def __init__(self, config: pytest.Config, log: Any = None) -> None:
            config.option.loadscopereorder = False
            super().__init__(config, log)

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        if config.getoption("dist") == "loadscope":
            return UnitScheduling(config, log)
        return None
