"""The daemon's own telemetry: metrics set from a decision record, their exposition, /healthz
and /readyz logic on an injected clock, the HTTP server on a loopback port, and the JSON log
formatter. No real components: the server listens on 127.0.0.1:0.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.logs import JsonFormatter, decision_log
from autoscaler.model import (
    Clip,
    ClipKind,
    Decision,
    Outcome,
    PolicyResult,
    SignalState,
    TargetState,
)
from autoscaler.telemetry import IDENTITY, NAMESPACE, Health, Telemetry, TelemetryServer

README = Path(__file__).resolve().parents[2] / "README.md"
INTERVAL = 15.0


def policy(name: str, state: SignalState = SignalState.OK, value: float | None = 1.0,
           replicas: int | None = 2, reason: str = "because") -> PolicyResult:
    return PolicyResult(name=name, type="capacity", state=state, value=value,
                        replicas=replicas, reason=reason)


def decision(target: str = "smtp", *, current: int = 2, ready: int | None = 2,
             desired: int = 3, outcome: Outcome = Outcome.SCALE_UP,
             policies: tuple[PolicyResult, ...] = (), clips: tuple[Clip, ...] = (),
             dry_run: bool = False) -> Decision:
    return Decision(target=target, time=1_700_000_000.0, current=current, ready=ready,
                    recommended=desired, desired=desired, outcome=outcome,
                    winner=policies[0].name if policies else None, policies=policies,
                    guards=(), clips=clips, state=TargetState(), held_state=TargetState(),
                    dry_run=dry_run)


def sample(tel: Telemetry, name: str, **labels: str) -> float | None:
    """The sample of `name` with exactly `labels` besides the identity labels (namespace,
    kind, workload, service: tests/integration/test_metric_labels.py checks them)."""
    for metric in tel.registry.collect():
        for s in metric.samples:
            if s.name == f"{NAMESPACE}_{name}" and {
                    k: v for k, v in s.labels.items() if k not in IDENTITY} == labels:
                return float(s.value)
    return None


def family_names(tel: Telemetry) -> set[str]:
    """Every family the registry defines, as the exposition names it (counters lose _total)."""
    return {metric.name for metric in tel.registry.collect()}


# ------------------------------------------------------------------ record_decision


@pytest.mark.parametrize(
    ("ready", "paused", "dry_run", "expected_ready"),
    [
        (2, False, False, 2.0),
        (None, False, False, math.nan),
        (0, True, False, 0.0),
        (5, False, True, 5.0),
    ],
    ids=["ready-known", "ready-unknown-is-nan", "paused", "dry-run"],
)
def test_record_decision_sets_the_per_target_gauges(
        ready: int | None, paused: bool, dry_run: bool, expected_ready: float) -> None:
    tel = Telemetry()
    tel.record_decision(decision("imap", current=4, ready=ready, desired=6, dry_run=dry_run),
                        min_replicas=1, max_replicas=9, paused=paused)
    assert sample(tel, "target_desired_replicas", target="imap") == 6
    assert sample(tel, "target_current_replicas", target="imap") == 4
    got_ready = sample(tel, "target_ready_replicas", target="imap")
    assert got_ready is not None
    if math.isnan(expected_ready):
        assert math.isnan(got_ready)
    else:
        assert got_ready == expected_ready
    assert sample(tel, "target_min_replicas", target="imap") == 1
    assert sample(tel, "target_max_replicas", target="imap") == 9
    assert sample(tel, "target_paused", target="imap") == (1 if paused else 0)
    assert sample(tel, "target_dry_run", target="imap") == (1 if dry_run else 0)


def test_targets_have_their_own_series() -> None:
    tel = Telemetry()
    tel.record_decision(decision("smtp", desired=3), 1, 10, paused=False)
    tel.record_decision(decision("imap", desired=7), 1, 10, paused=False)
    assert sample(tel, "target_desired_replicas", target="smtp") == 3
    assert sample(tel, "target_desired_replicas", target="imap") == 7
    tel.forget_target("imap")
    assert sample(tel, "target_desired_replicas", target="imap") is None
    assert sample(tel, "target_desired_replicas", target="smtp") == 3


def test_a_forgotten_target_is_exported_again_by_its_next_decision() -> None:
    tel = Telemetry()
    cpu = policy("cpu", value=50.0, replicas=2)
    tel.record_decision(decision("imap", desired=7, policies=(cpu,)), 1, 10, paused=False)
    tel.forget_target("imap")
    tel.record_decision(decision("imap", desired=5, policies=(cpu,)), 1, 10, paused=False)
    assert sample(tel, "target_desired_replicas", target="imap") == 5
    assert sample(tel, "policy_value", target="imap", policy="cpu") == 50.0
    assert sample(tel, "decisions_total", target="imap", outcome="scale_up") == 1  # afresh


def test_a_forgotten_target_leaves_no_series_at_all() -> None:
    """Gauges, counters and histograms: everything labelled with the target goes with it."""
    tel = Telemetry()
    for name in ("imap", "smtp"):
        tel.record_decision(decision(name, policies=(policy("cpu", state=SignalState.STALE),),
                                     clips=(Clip(ClipKind.BOUNDS, 3, 2, "max"),)),
                            1, 10, paused=False)
        tel.observe_query(name, 0.2)
        tel.observe_actuation(name, "scale", 0.1, failed=True)
        tel.count_write(name, "up")
    tel.forget_target("imap")

    def targets() -> set[str]:
        return {s.labels.get("target", "") for f in tel.registry.collect() for s in f.samples}

    assert targets() == {"smtp", ""}
    assert sample(tel, "actuation_errors_total", target="smtp", verb="scale") == 1


def test_a_removed_policy_leaves_at_once_the_rest_stays() -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(policy("cpu"), policy("queue"))), 1, 10,
                        paused=False)
    tel.forget_policies("smtp", {"cpu"})
    assert sample(tel, "policy_value", target="smtp", policy="cpu") is None
    assert sample(tel, "signal_state", target="smtp", policy="cpu", state="ok") is None
    assert sample(tel, "policy_value", target="smtp", policy="queue") is not None
    assert sample(tel, "target_desired_replicas", target="smtp") == 3


@pytest.mark.parametrize(
    ("result", "value", "recommendation"),
    [
        (policy("cpu", value=82.5, replicas=4), 82.5, 4.0),
        (policy("trend", value=120.0, replicas=None), 120.0, math.nan),
        (policy("inflow", state=SignalState.EMPTY, value=None, replicas=None),
         math.nan, math.nan),
        (policy("zero", value=0.0, replicas=1), 0.0, 1.0),
    ],
    ids=["value-and-replicas", "no-opinion-is-nan", "no-value-is-nan", "zero-is-not-nan"],
)
def test_policy_value_and_recommendation(result: PolicyResult, value: float,
                                         recommendation: float) -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(result,)), 1, 10, paused=False)
    labels = {"target": "smtp", "policy": result.name}
    for name, expected in (("policy_value", value),
                           ("policy_recommendation", recommendation)):
        got = sample(tel, name, **labels)
        assert got is not None, name
        assert (math.isnan(got) if math.isnan(expected) else got == expected), (name, got)


@pytest.mark.parametrize(("result", "expected"), [
    pytest.param(PolicyResult("seasonal", "seasonal", SignalState.OK, 9000.0, None,
                              "observe: ...", forecast=52000.0), 52000.0,
                 id="forecast-beside-the-value-observe-too"),
    pytest.param(PolicyResult("seasonal", "seasonal", SignalState.OK, 9000.0, None,
                              "history loading: no opinion"), math.nan,
                 id="history-loading-is-nan"),
    pytest.param(policy("cpu"), None, id="no-series-for-a-policy-that-never-forecasts"),
])
def test_policy_forecast(result: PolicyResult, expected: float | None) -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(result,)), 1, 10, paused=False)
    got = sample(tel, "policy_forecast", target="smtp", policy=result.name)
    if expected is None:
        assert got is None
    else:
        assert got is not None and (math.isnan(got) if math.isnan(expected)
                                    else got == expected)
    if result.forecast is not None:
        assert sample(tel, "policy_value", target="smtp", policy=result.name) == 9000.0


@pytest.mark.parametrize(("result", "expected"), [
    pytest.param(PolicyResult("seasonal", "seasonal", SignalState.OK, 9000.0, None, "...",
                              history_seconds=691_200.0), 691_200.0, id="eight-days-held"),
    pytest.param(PolicyResult("seasonal", "seasonal", SignalState.OK, 9000.0, None,
                              "history loading: no opinion", history_seconds=0.0), 0.0,
                 id="loading-is-zero"),
    pytest.param(policy("cpu"), None, id="no-series-for-a-policy-that-reads-no-history"),
])
def test_policy_history_seconds(result: PolicyResult, expected: float | None) -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(result,)), 1, 10, paused=False)
    assert sample(tel, "policy_history_seconds", target="smtp", policy=result.name) == expected


@pytest.mark.parametrize("state", list(SignalState), ids=[str(s) for s in SignalState])
def test_signal_state_is_one_hot(state: SignalState) -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(policy("cpu", state=state),)), 1, 10, paused=False)
    values = {str(s): sample(tel, "signal_state", target="smtp", policy="cpu", state=str(s))
              for s in SignalState}
    assert values == {str(s): (1.0 if s is state else 0.0) for s in SignalState}


def test_signal_state_follows_the_latest_decision() -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(policy("cpu", state=SignalState.ERROR),)),
                        1, 10, paused=False)
    tel.record_decision(decision(policies=(policy("cpu", state=SignalState.OK),)),
                        1, 10, paused=False)
    assert sample(tel, "signal_state", target="smtp", policy="cpu", state="ok") == 1
    assert sample(tel, "signal_state", target="smtp", policy="cpu", state="error") == 0


def test_decisions_clips_and_query_errors_are_counted() -> None:
    tel = Telemetry()
    clips = (Clip(ClipKind.RATE_LIMIT, 9, 6, "4 pods per 15s"),
             Clip(ClipKind.BOUNDS, 6, 5, "max_replicas"))
    tel.record_decision(decision(outcome=Outcome.SCALE_UP, clips=clips), 1, 5, paused=False)
    tel.record_decision(decision(outcome=Outcome.SCALE_UP, clips=clips[:1]), 1, 5,
                        paused=False)
    tel.record_decision(
        decision(outcome=Outcome.HOLD, desired=2,
                 policies=(policy("cpu", state=SignalState.STALE, value=None, replicas=None),)),
        1, 5, paused=False)
    assert sample(tel, "decisions_total", target="smtp", outcome="scale_up") == 2
    assert sample(tel, "decisions_total", target="smtp", outcome="hold") == 1
    assert sample(tel, "decisions_total", target="smtp", outcome="scale_down") is None
    assert sample(tel, "clips_total", target="smtp", kind="rate_limit") == 2
    assert sample(tel, "clips_total", target="smtp", kind="bounds") == 1
    assert sample(tel, "query_errors_total", target="smtp", state="stale") == 1
    assert sample(tel, "query_errors_total", target="smtp", state="ok") is None


# ------------------------------------------------------------------ exposition


def test_exposition_parses_and_has_every_family() -> None:
    tel = Telemetry()
    tel.record_decision(decision(policies=(policy("cpu"),),
                                 clips=(Clip(ClipKind.BOUNDS, 3, 2, "max"),)),
                        1, 2, paused=False)
    tel.ticks.inc()
    text = tel.exposition().decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    defined = family_names(tel)
    assert len(defined) >= 20  # telemetry.py defines this many families today
    assert all(name.startswith(f"{NAMESPACE}_") for name in defined)
    assert defined <= set(parsed), sorted(defined - set(parsed))
    desired = parsed[f"{NAMESPACE}_target_desired_replicas"]
    assert [(s.labels, s.value) for s in desired.samples] == [
        ({"target": "smtp", **dict.fromkeys(IDENTITY, "")}, 3.0)]
    ticks = parsed[f"{NAMESPACE}_ticks"]
    assert ticks.type == "counter"
    assert any(s.name == f"{NAMESPACE}_ticks_total" and s.value == 1 for s in ticks.samples)


def _readme_metrics_section() -> str:
    """The README's section whose heading mentions metrics, down to the next heading of the
    same or a higher level ("" when there is none)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m and re.search(r"\bmetrics\b", m.group(2), re.IGNORECASE):
            level = len(m.group(1))
            body = []
            for following in lines[i + 1:]:
                h = re.match(r"^(#{1,6})\s", following)
                if h and len(h.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    return ""


def test_readme_metrics_section_names_every_family() -> None:
    section = _readme_metrics_section()
    missing = sorted(name for name in family_names(Telemetry()) if name not in section)
    assert section and not missing, f"README metrics section lacks: {missing}"


# ------------------------------------------------------------------ Health


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("tick_after", "check_after", "healthy"),
    [
        (None, 0.0, True),
        (None, 2.9 * INTERVAL, True),
        (None, 3.1 * INTERVAL, False),
        (None, 100 * INTERVAL, False),
        (10 * INTERVAL, 12.9 * INTERVAL, True),
        (10 * INTERVAL, 13.1 * INTERVAL, False),
    ],
    ids=["at-start", "first-3-intervals", "never-ticked", "long-stuck",
         "recent-tick", "tick-too-old"],
)
def test_healthy_within_three_intervals(tick_after: float | None, check_after: float,
                                        healthy: bool) -> None:
    clock = FakeClock()
    health = Health(INTERVAL, clock=clock)
    start = clock.now
    if tick_after is not None:
        clock.now = start + tick_after
        health.ticked()
    clock.now = start + check_after
    ok, body = health.healthy()
    assert ok is healthy
    assert body["status"] == ("ok" if healthy else "stuck")
    since = check_after - (tick_after or 0.0)
    assert body["seconds_since_last_tick"] == pytest.approx(since, abs=0.01)


def test_a_tick_makes_a_stuck_loop_healthy_again() -> None:
    clock = FakeClock()
    health = Health(INTERVAL, clock=clock)
    clock.now += 4 * INTERVAL
    assert health.healthy()[0] is False
    health.ticked()
    assert health.healthy()[0] is True


# (config loaded, ticked, problems) -> (/readyz ok, its "degraded"), (/statusz ok, its status).
# Readiness is only "running with a loaded config" (#11 item 11): a rollout must complete
# during a Prometheus outage; what is degraded moves to the body, the metrics and /statusz.
@pytest.mark.parametrize(
    ("config_loaded", "ticked", "problems", "ready", "degraded", "status_ok", "status"),
    [
        (False, False, {}, False, True, False, "no config"),
        (True, False, {}, True, True, False, "starting"),
        (True, True, {}, True, False, True, "ok"),
        (True, True, {"prometheus": "connection refused"}, True, True, False, "degraded"),
        (True, True, {"smtp": "service not found", "imap": "timed out"}, True, True, False,
         "degraded"),
        (True, True, {"smtp": "HorizontalPodAutoscaler mail/smtp also scales it"}, True, True,
         False, "degraded"),
        (False, True, {"smtp": "service not found"}, False, True, False, "no config"),
    ],
    ids=["config-not-loaded", "before-a-first-tick", "all-well", "prometheus-down",
         "targets-failing", "hpa-conflict", "neither"],
)
def test_ready_with_a_loaded_config_degraded_detail_in_status(
        config_loaded: bool, ticked: bool, problems: dict[str, str], ready: bool,
        degraded: bool, status_ok: bool, status: str) -> None:
    health = Health(INTERVAL, clock=FakeClock())
    health.config_loaded = config_loaded
    health.set_problems(problems)
    if ticked:
        health.ticked()
    ok, body = health.ready()
    assert ok is ready
    assert body["status"] == ("ready" if ready else "not ready")
    assert body["config_loaded"] is config_loaded
    assert body["degraded"] is degraded
    assert body["problems"] == problems
    ok, body = health.status()
    assert ok is status_ok
    assert body["status"] == status
    assert body["problems"] == problems
    problems.clear()  # Health keeps its own copy
    assert health.ready()[1]["problems"] == body["problems"]


@pytest.mark.parametrize(
    ("ticks", "degraded", "problem"),
    [
        ([{}], 0.0, {}),
        ([{"prometheus": "refused"}], 1.0, {"prometheus": 1.0}),
        ([{"prometheus": "refused", "smtp": "x"}, {"smtp": "x"}], 1.0,
         {"prometheus": 0.0, "smtp": 1.0}),
        ([{"smtp": "x"}, {}], 0.0, {"smtp": 0.0}),
    ],
    ids=["never-a-problem", "prometheus-down", "prometheus-back", "all-mended"],
)
def test_problems_are_exported(ticks: list[dict[str, str]], degraded: float,
                               problem: dict[str, float]) -> None:
    tel = Telemetry()
    for problems in ticks:
        tel.record_problems(problems)
    assert sample(tel, "degraded") == degraded
    for component, value in problem.items():
        assert sample(tel, "problem", component=component) == value
    tel.forget_target("smtp")
    assert sample(tel, "problem", component="smtp") is None


# ------------------------------------------------------------------ TelemetryServer


@pytest.fixture
def served() -> Iterator[tuple[str, Telemetry, Health, FakeClock]]:
    tel = Telemetry()
    clock = FakeClock()
    health = Health(INTERVAL, clock=clock)
    server = TelemetryServer("127.0.0.1:0", tel, health)
    server.start()
    try:
        yield f"http://{server.address}", tel, health, clock
    finally:
        server.stop()


def get(url: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False  # loopback only: never through a proxy from the environment
    with session:
        return session.get(url, timeout=10)


def test_server_binds_an_ephemeral_loopback_port(
        served: tuple[str, Telemetry, Health, FakeClock]) -> None:
    base = served[0]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0


def test_metrics_endpoint(served: tuple[str, Telemetry, Health, FakeClock]) -> None:
    base, tel, _, _ = served
    tel.record_decision(decision("smtp", desired=5), 1, 10, paused=False)
    tel.ticks.inc()
    response = get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert family_names(tel) <= names
    assert ('autoscaler_target_desired_replicas{namespace="",service="",target="smtp",'
            'workload="",workload_kind=""} 5.0') in response.text
    assert get(f"{base}/metrics?name[]=x").status_code == 200  # a query string is ignored


@pytest.mark.parametrize(
    ("path", "setup", "code", "status"),
    [
        ("/healthz", "fresh", 200, "ok"),
        ("/healthz", "stuck", 503, "stuck"),
        ("/readyz", "fresh", 200, "ready"),
        ("/readyz", "problem", 200, "ready"),
        ("/readyz", "no-config", 503, "not ready"),
        ("/statusz", "fresh", 200, "ok"),
        ("/statusz", "problem", 503, "degraded"),
        ("/statusz", "no-config", 503, "no config"),
    ],
    ids=["healthz-ok", "healthz-stuck", "readyz-ok", "readyz-problem-still-ready",
         "readyz-no-config", "statusz-ok", "statusz-problem", "statusz-no-config"],
)
def test_health_endpoints(served: tuple[str, Telemetry, Health, FakeClock], path: str,
                          setup: str, code: int, status: str) -> None:
    base, _, health, clock = served
    health.config_loaded = setup != "no-config"
    if path in ("/readyz", "/statusz"):
        health.ticked()
    if setup == "stuck":
        clock.now += 4 * INTERVAL
    if setup == "problem":
        health.set_problems({"smtp": "service not found"})
    response = get(f"{base}{path}")
    assert response.status_code == code
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if setup == "problem":
        assert body["problems"] == {"smtp": "service not found"}


@pytest.mark.parametrize("path", ["/", "/metrics/extra", "/healthz/", "/ready", "/favicon.ico"],
                         ids=["root", "below-metrics", "trailing-slash", "near-miss", "favicon"])
def test_anything_else_is_404(served: tuple[str, Telemetry, Health, FakeClock],
                              path: str) -> None:
    response = get(f"{served[0]}{path}")
    assert response.status_code == 404
    assert "/metrics" in response.text


# ------------------------------------------------------------------ JsonFormatter


def record(logger: str, message: str, level: int = logging.INFO,
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(logger, level, __file__, 1, message, None, exc_info)


def test_decision_line_passes_through_as_json() -> None:
    line = json.dumps({"event": "decision", "target": "smtp", "desired": 3,
                       "policies": [{"name": "cpu", "value": 80.0}]})
    out = JsonFormatter().format(record(decision_log.name, line))
    assert out == line
    assert json.loads(out)["event"] == "decision"


@pytest.mark.parametrize(
    ("logger", "message", "level"),
    [
        ("autoscaler.loop", "target smtp: timed out; holding its size", logging.ERROR),
        ("autoscaler", "started: 2 target(s)", logging.INFO),
        ("autoscaler.loop", '{"looks": "like json"}', logging.WARNING),
        (decision_log.name, "not json at all", logging.INFO),
    ],
    ids=["error", "info", "json-like-from-another-logger", "plain-decision-logger-line"],
)
def test_other_lines_become_json(logger: str, message: str, level: int) -> None:
    out = JsonFormatter().format(record(logger, message, level))
    line = json.loads(out)
    assert line["level"] == logging.getLevelName(level)
    assert line["logger"] == logger
    assert line["message"] == message
    assert "\n" not in out


def test_exceptions_are_kept_on_one_json_line() -> None:
    out = JsonFormatter().format(record("autoscaler.loop", "tick failed", logging.ERROR,
                                        exc=True))
    assert "\n" not in out
    line = json.loads(out)
    assert line["message"] == "tick failed"
    assert "RuntimeError: boom" in line["exception"]
