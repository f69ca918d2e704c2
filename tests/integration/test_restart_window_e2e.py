"""#11 item 5 on the real stack: a daemon restart in the middle of a scale-down window does
not shorten it. Recommendations reach the target only with a scale, so a restarted daemon
used to see only the old ones and scale down at once; now its first tick starts the history
with (now, current), as the HPA does: the scale-down waits a full window after the restart.

A Deployment on the test environment's kube-apiserver; a constant Prometheus query asks for 3
replicas, then (a SIGHUP reload, the "load drop") for 1; the daemon is restarted half-way
through the 20 s scale-down window.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import kubernetes.client as k

from tests.support.daemon import daemon, daemon_env, write_yaml, writes
from tests.support.kube import namespace_with_deployment
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

WINDOW = 20.0  # the scale-down stabilization window
DEADLINE = 90.0  # generous


def config(path: Path, realenv: RealEnv, port: int, ns: str, rate: int) -> Path:
    return write_yaml(path, {
        "evaluation_interval": "1s",
        "prometheus": {"url": realenv.prometheus_url, "timeout": "3s", "scrape_interval": "1s"},
        "listen": f"127.0.0.1:{port}",
        "targets": [{"name": "smtp", "backend": "kubernetes", "namespace": ns,
                     "deployment": "smtp", "min_replicas": 1, "max_replicas": 5,
                     "cooldown": {"up": "0s", "down": "0s"},
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": int(WINDOW)}},
                     "policies": [{"type": "capacity", "query": f"vector({rate})",
                                   "per_instance": 10000, "headroom": 1}]}],
    })


def replicas(api: Any, ns: str) -> int:
    return int(k.AppsV1Api(api).read_namespaced_deployment("smtp", ns).spec.replicas or 0)


def test_a_restart_mid_window_does_not_shorten_the_scale_down_window(
        realenv: RealEnv, kube_api: Any, tmp_path: Path) -> None:
    env = daemon_env(drop=("KUBECONFIG", "KUBERNETES_", "POD_"),
                     KUBECONFIG=str(realenv.kubeconfig))
    with namespace_with_deployment(kube_api, "restart-window", "smtp", replicas=1) as ns:
        port = free_port()
        path = config(tmp_path / "c.yaml", realenv, port, ns, 30000)
        with daemon(path, env, tmp_path, port=port, label="first") as first:
            wait_until("scaled to 3", lambda: writes(first), DEADLINE)
            time.sleep(WINDOW + 2)  # the recommendation stored with that write is now old
            config(path, realenv, port, ns, 10000)  # the load drops: 1 is enough
            first.signal(signal.SIGHUP)
            dropped = wait_until("a decision asking for 1",
                                 lambda: next((r["time"] for r in first.decisions("smtp")
                                               if r["recommended"] == 1), None), DEADLINE)
            time.sleep(WINDOW / 2)  # half-way through the window: restart
            assert writes(first, since=dropped) == [] and replicas(kube_api, ns) == 3
            assert first.stop() == 0
        restarted = time.time()
        with daemon(path, env, tmp_path, port=port, label="second") as second:
            [down, *_] = wait_until("the scale-down", lambda: writes(second), DEADLINE)
            assert down["desired"] == 1 and replicas(kube_api, ns) == 1
            # Never before the window that began with the drop ends (the bug: at once) ...
            assert down["time"] >= dropped + WINDOW, (down["time"] - dropped)
            # ... and at most one window after the restart, as its first sight allows.
            assert down["time"] >= restarted + WINDOW - 1.0, (down["time"] - restarted)
            first_decision = second.decisions("smtp")[0]
            assert (first_decision["recommended"], first_decision["desired"]) == (1, 3)
            assert second.stop() == 0
