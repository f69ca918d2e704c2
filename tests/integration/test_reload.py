"""SIGHUP reload of a real `autoscaler run` process, on the real Prometheus and real Swarm
services: a target added by a reload appears in /metrics and the decision log while the first
target keeps its in-memory stabilization; an invalid file is rejected with every problem logged
(file:line and key), counted, and the old config keeps deciding.

Why the first target's state can only survive in memory: its policy asks 6 replicas, clamped
to max_replicas 3, which is the service's size, so nothing is ever written to the service (state
on the target is written only with a replica change). After the reload its policy asks 2; the
600 s scale-down stabilization window holds 3 only because this process remembers the 6. The
added target, same policy and size but no memory, scales to 2: the control showing the check
can fail. The unit tests (tests/unit/test_reload.py) cover the rest of Engine.reload on fakes.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import config_data, daemon, daemon_env, write_yaml
from tests.support.e2e import spec_replicas, swarm_service
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(300)

START = 60.0  # deadline for the process to serve and tick (generous)
SETTLE = 60.0  # deadline for a reload or a scale to show
WINDOW = {"scaleDown": {"stabilizationWindowSeconds": 600}}


# --------------------------------------------------------------------------- helpers


def capacity(emails_per_hour: float) -> dict[str, Any]:
    """A capacity policy on a constant: ceil(emails_per_hour / 10000 x 1.5) replicas."""
    return {"type": "capacity", "name": "inflow", "query": f"vector({emails_per_hour:g})",
            "per_instance": 10000, "headroom": 1.5}


def target(name: str, service: str, emails_per_hour: float) -> dict[str, Any]:
    return {"name": name, "backend": "swarm", "service": service, "min_replicas": 1,
            "max_replicas": 3, "cooldown": {"up": "0s", "down": "0s"}, "behavior": WINDOW,
            "policies": [capacity(emails_per_hour)]}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# --------------------------------------------------------------------------- tests


def test_a_reload_adds_a_target_and_keeps_the_first_targets_memory(
        realenv: RealEnv, docker_client: Any, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "autoscaler.yaml"
    with swarm_service(docker_client, realenv.busybox_image, replicas=3) as svc_a, \
            swarm_service(docker_client, realenv.busybox_image, replicas=3) as svc_b:
        write_yaml(config, config_data(realenv.prometheus_url, port,
                                       [target("a", svc_a.name, 40000)]))
        with daemon(config, daemon_env(DOCKER_HOST=realenv.docker_host), tmp_path,
                    port=port) as d:
            first = wait_until("two decisions of a", lambda: d.decisions("a")[1:], START)
            assert (first[0]["recommended"], first[0]["desired"]) == (6, 3), first[0]
            assert ("autoscaler_target_desired_replicas", (("target", "b"),)) not in d.metrics()

            write_yaml(config, config_data(
                realenv.prometheus_url, port,
                [target("a", svc_a.name, 10000), target("b", svc_b.name, 10000)],
                evaluation_interval="2s",
                prometheus={"url": realenv.prometheus_url, "timeout": "4s",
                            "scrape_interval": "1s"}))
            d.signal(signal.SIGHUP)
            reloaded = wait_until("the reload logged", lambda: d.index_of("config reloaded from"),
                                  SETTLE)
            message = d.records()[reloaded]["message"]
            assert "1 target(s) kept with their state" in message and "added: b" in message
            assert "evaluation_interval 1s -> 2s" in message
            assert "new Prometheus connection" in message

            # the new target is decided and exported; on first sight its stabilization
            # history starts with (now, current) as after a start (#11 item 5), so it holds
            # its size for the window rather than scaling down on its first tick ...
            b = wait_until("a decision of b", lambda: d.decisions("b", after=reloaded), SETTLE)
            assert (b[0]["recommended"], b[0]["desired"], b[0]["written"]) == (2, 3, False)
            assert "stabilization" in {c["kind"] for c in b[0]["clips"]}, b[0]
            wait_until("b in /metrics",
                       lambda: d.metrics().get(("autoscaler_target_desired_replicas",
                                              (("target", "b"),))) == 3, SETTLE)
            assert spec_replicas(docker_client, svc_b.name) == 3

            # ... while a, with the same policy and size, holds on what it remembers
            held = wait_until("three decisions of a after the reload",
                              lambda: len(d.decisions("a", after=reloaded)) >= 3
                            and d.decisions("a", after=reloaded), SETTLE)
            for record in held:
                assert (record["recommended"], record["desired"]) == (2, 3), record
                assert "stabilization" in {c["kind"] for c in record["clips"]}, record
                assert record["written"] is False
            assert spec_replicas(docker_client, svc_a.name) == 3
            labels = docker_client.api.inspect_service(svc_a.name)["Spec"].get("Labels") or {}
            assert not any(k.startswith("autoscaler.") for k in labels)  # only memory held it
            assert d.metrics().get(("autoscaler_config_reload_failures_total", ())) == 0
            assert d.stop() == 0
        no_traceback(d.log_text())


def test_an_invalid_reload_is_rejected_logged_counted_and_the_old_config_runs(
        realenv: RealEnv, docker_client: Any, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "autoscaler.yaml"
    with swarm_service(docker_client, realenv.busybox_image, replicas=3) as svc_a:
        write_yaml(config, config_data(realenv.prometheus_url, port,
                                       [target("a", svc_a.name, 40000)]))
        with daemon(config, daemon_env(DOCKER_HOST=realenv.docker_host), tmp_path,
                    port=port) as d:
            wait_until("a decided", lambda: d.decisions("a"), START)
            # three problems: a cross-field rule, an unknown key, a value of the wrong type
            config.write_text(
                "evaluation_interval: 1s\n"  # line 1
                f"prometheus: {{url: '{realenv.prometheus_url}', timeout: 3s}}\n"
                f"listen: 127.0.0.1:{port}\n"
                "targets:\n"
                "  - name: a\n"  # line 5
                "    backend: swarm\n"
                f"    service: {svc_a.name}\n"
                "    min_replicas: 5\n"  # line 8: above max_replicas
                "    max_replicas: 3\n"
                "    colldown: {up: 0s}\n"  # line 10: a typo
                "    policies:\n"
                "      - {type: capacity, name: inflow, query: 'vector(10000)'}\n"
                "  - name: b\n"
                "    backend: swarm\n"
                "    service: nothing\n"
                "    max_replicas: many\n"  # line 16: not a number
                "    policies:\n"
                "      - {type: capacity, query: 'vector(1)'}\n")
            d.signal(signal.SIGHUP)
            wait_until("autoscaler_config_reload_failures_total 1",
                       lambda: d.metrics().get(("autoscaler_config_reload_failures_total", ()))
                     == 1, SETTLE)
            summary = wait_until("the rejection summary",
                                 lambda: d.index_of("the running config stays"), SETTLE)
            rejected = [str(r["message"]) for r in d.records()[:summary]
                        if str(r.get("message", "")).startswith("config reload rejected: ")]
            expected = [(8, "targets[0].min_replicas"), (10, "targets[0].colldown"),
                        (16, "targets[1].max_replicas")]
            assert len(rejected) == len(expected), rejected
            for line, key in expected:
                assert any(f"{config}:{line}: {key}: " in m for m in rejected), (line, key)
            assert all(r["level"] == "ERROR" for r in d.records()[:summary + 1]
                       if "reload" in str(r.get("message", "")))

            later = wait_until("a still decided by the old config",
                               lambda: len(d.decisions("a", after=summary)) >= 3
                             and d.decisions("a", after=summary), SETTLE)
            for record in later:  # the old policy (40000/h -> 6) still runs
                assert record["recommended"] == 6, record
            assert not d.decisions("b")
            assert d.alive()
            assert d.stop() == 0
        no_traceback(d.log_text())
