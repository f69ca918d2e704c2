"""Config loading: YAML and TOML, durations, every error at once, environment, presets, schema.

The error tests read one config with many mistakes and look each one up by key: the contract is
that ONE run of `check-config` lists them all, each with its key path, file and (YAML) line.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from autoscaler.config import (
    ConfigError,
    ConfigIssue,
    Settings,
    config_schema,
    load_config,
    load_config_data,
    redacted_dump,
)
from tests.support.configs import EXAMPLE, TARGET, example_data, minimal
from tests.support.strategies import environments, file_contents
from tests.support.tier import examples

NO_ENV: dict[str, str] = {}

def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def issues_of(path: Path, environ: Mapping[str, str] = NO_ENV) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    assert info.value.issues, "a ConfigError must carry at least one issue"
    return info.value.issues


def issues_data(data: dict[str, Any], environ: Mapping[str, str] = NO_ENV) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_data(data, environ=environ)
    return info.value.issues


def with_key(issues: list[ConfigIssue], key: str) -> list[ConfigIssue]:
    found = [i for i in issues if i.key == key]
    assert found, f"no issue for {key!r}; got:\n" + "\n".join(map(str, issues))
    return found


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of `text` containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"needle {needle!r} is on lines {hits}"
    return hits[0]


# --------------------------------------------------------------------------- loading

EXAMPLE_TOML = """\
# The bundled example, in TOML, with some values spelled differently.
evaluation_interval = "15s"
dry_run = false
listen = "127.0.0.1:9464"

[prometheus]
url = "http://127.0.0.1:9090/"
timeout = 5

[leader_election]
mode = "swarm"

[[targets]]
name = "smtp"
backend = "swarm"
service = "stalwart_smtp"
min_replicas = 2
max_replicas = 20
cooldown = { up = "1m", down = "0s" }
preset = "stalwart-smtp"
preset_options = { edition = "community" }

[targets.behavior.scaleDown]
stabilizationWindowSeconds = 600

[targets.behavior.scaleUp]
stabilizationWindowSeconds = 30

[[targets]]
name = "imap"
backend = "swarm"
service = "stalwart_imap"
min_replicas = 2
max_replicas = 10
cooldown = { up = 60, down = "10m" }
preset = "stalwart-imap"

[simulation]
capacity_per_instance = 10000
startup_delay = "1m"
scrape_interval = "15s"
"""


def test_bundled_example_loads() -> None:
    settings = load_config(EXAMPLE, environ=NO_ENV)
    assert [t.name for t in settings.targets] == ["smtp", "imap"]
    smtp = settings.target("smtp")
    assert (smtp.min_replicas, smtp.max_replicas) == (2, 20)
    assert (smtp.cooldown.up, smtp.cooldown.down) == (60.0, 0.0)
    assert smtp.behavior.scale_down.stabilization_window_seconds == 600
    assert smtp.behavior.scale_up.stabilization_window_seconds == 30
    assert settings.leader_election.mode == "swarm"
    assert settings.evaluation_interval == 15.0
    assert settings.simulation.startup_delay == 60.0


def test_toml_equivalent_loads_to_the_same_settings(tmp_path: Path) -> None:
    from_toml = load_config(write(tmp_path, EXAMPLE_TOML, "example.toml"), environ=NO_ENV)
    assert from_toml == load_config(EXAMPLE, environ=NO_ENV)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(example_data, id="bundled-example"),
        pytest.param(
            lambda: minimal(
                prometheus={"url": "https://prom:9090", "headers": {"X-Org": "a"},
                            "basic_auth": {"username": "u", "password_file": "/run/pw"}},
                leader_election={"mode": "kubernetes", "lease_namespace": "mail"},
                targets=[{
                    "name": "k8s", "backend": "kubernetes", "namespace": "mail",
                    "statefulset": "stalwart", "max_replicas": 9, "min_replicas": 3,
                    "on_metric_error": "fallback", "fallback_replicas": 5,
                    "guards": [{"query": "g", "below": 1, "block": "scale_up"}],
                    "policies": [
                        {"type": "threshold", "query": "cpu", "scale_up_above": 70,
                         "scale_down_below": 30, "for": "1m30s", "step": 2},
                        {"type": "queue_trend", "query": "q", "window": "0.5s"},
                        {"type": "target_value", "query": "t", "target": 70},
                    ],
                }],
            ),
            id="explicit-policies-kubernetes",
        ),
    ],
)
def test_effective_config_dump_loads_back_to_the_same_settings(
    tmp_path: Path, document: Callable[[], dict[str, Any]]
) -> None:
    # What check-config prints must itself be a valid config meaning the same thing.
    settings = load_config_data(document(), environ=NO_ENV)
    dumped = redacted_dump(settings)
    again = load_config(write(tmp_path, yaml.safe_dump(dumped)), environ=NO_ENV)
    assert again.model_dump() == {
        **settings.model_dump(),
        "prometheus": {**settings.prometheus.model_dump(),
                       "headers": dict.fromkeys(settings.prometheus.headers, "<redacted>")},
    }


@pytest.mark.parametrize("seconds", [1234.5678, 1e-07, 123456.5], ids=str)
def test_effective_config_dump_keeps_duration_values(tmp_path: Path, seconds: float) -> None:
    settings = load_config_data(minimal(simulation={"startup_delay": seconds}), environ=NO_ENV)
    again = load_config(write(tmp_path, yaml.safe_dump(redacted_dump(settings))), environ=NO_ENV)
    assert again.simulation.startup_delay == seconds


# TARGET with a duration in each place one can stand.
DURATION_DOC = ("evaluation_interval: {evaluation_interval}\nprometheus:\n  timeout: {timeout}\n"
                + TARGET
                + "    cooldown:\n      up: {up}\nsimulation:\n  startup_delay: {startup_delay}\n")

DURATION_KEYS = [
    pytest.param("evaluation_interval", "evaluation_interval",
                 lambda s: s.evaluation_interval, id="evaluation_interval"),
    pytest.param("timeout", "prometheus.timeout", lambda s: s.prometheus.timeout,
                 id="prometheus.timeout"),
    pytest.param("up", "targets[0].cooldown.up", lambda s: s.targets[0].cooldown.up,
                 id="cooldown.up"),
    pytest.param("startup_delay", "simulation.startup_delay",
                 lambda s: s.simulation.startup_delay, id="simulation.startup_delay"),
]


def duration_doc(slot: str, value: str) -> str:
    slots = {"evaluation_interval": "15s", "timeout": "5s", "up": "60s", "startup_delay": "60s"}
    return DURATION_DOC.format(**{**slots, slot: value})


@pytest.mark.parametrize(("slot", "key", "read"), DURATION_KEYS)
@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        pytest.param("15s", 15.0, id="15s"),
        pytest.param("5m", 300.0, id="5m"),
        pytest.param("1h", 3600.0, id="1h"),
        pytest.param("1h30m", 5400.0, id="1h30m"),
        pytest.param("90", 90.0, id="int-90"),
        pytest.param('"90"', 90.0, id="string-90"),
        pytest.param("2.5", 2.5, id="float-2.5"),
        pytest.param("500ms", 0.5, id="500ms"),
    ],
)
def test_duration_parses_to_seconds(
    tmp_path: Path, slot: str, key: str, read: Callable[[Settings], float], written: str,
    seconds: float,
) -> None:
    settings = load_config(write(tmp_path, duration_doc(slot, written)), environ=NO_ENV)
    assert read(settings) == seconds


@pytest.mark.parametrize(("slot", "key", "read"), DURATION_KEYS)
@pytest.mark.parametrize("written", ["5x", "-1s", "abc", "true", ".nan", "[15s]"])
def test_invalid_duration_is_an_error_naming_the_key(
    tmp_path: Path, slot: str, key: str, read: Callable[[Settings], float], written: str,
) -> None:
    text = duration_doc(slot, written)
    path = write(tmp_path, text)
    issues = issues_of(path)
    (issue,) = with_key(issues, key)
    assert "duration" in issue.message
    assert issue.source == str(path)
    assert issue.line == line_of(text, f"{slot}: {written}")
    assert len(issues) == 1, issues


# --------------------------------------------------------------------------- every error

BAD_YAML = """\
evaluation_interval: 15s
dry_run: sometimes
bogus: 1
prometheus:
  url: ftp://prometheus:9090
  tmeout: 5s
listen: no-port-here
leader_election:
  mode: kubernetes
  lease_duration: 15
  renew_deadline: 20
targets:
  - name: smtp
    backend: swarm
    service: stalwart_smtp
    min_replicas: 5
    max_replicas: 2
    cooldown:
      up: abc
    policies:
      - type: threshold
        query: avg(cpu_percent)
        scale_up_above: 30
        scale_down_below: 40
        tmeout: 1
      - type: nope
        query: q
      - type: threshold  # no query
        scale_up_above: 10
        scale_down_below: 10
    guards:
      - query: sum(delivery_active_connections)
  - name: imap
    backend: kubernetes
    deployment: web
    statefulset: web-sts
    max_replicas: 3
    preset: stalwart-imap
  - name: http
    backend: kubernetes
    namespace: mail
    deployment: http
    min_replicas: 2
    max_replicas: 3
    on_metric_error: fallback
    fallback_replicas: 9
    policies:  # two named dup
      - {type: capacity, query: a, name: dup}
      - {type: capacity, query: b, name: dup}
  - name: nothing  # neither policies nor preset
    backend: swarm
    service: nothing
    max_replicas: 3
    on_metric_error: fallback
  - name: smtp
    backend: swarm
    service: other
    max_replicas: lots
    preset: stalwart-smtp
  - name: noservice
    backend: swarm
    max_replicas: 2
    preset: stalwart-smtp
"""

# (key, a text unique to the line the issue must point at, a fragment of the message)
BAD_YAML_ISSUES = [
    pytest.param("dry_run", "dry_run: sometimes", "boolean", id="wrong-type-bool"),
    pytest.param("bogus", "bogus: 1", "unknown key", id="unknown-top-level"),
    pytest.param("prometheus.url", "url: ftp://", "http", id="non-http-url"),
    pytest.param("prometheus.tmeout", "tmeout: 5s", "unknown key", id="unknown-nested"),
    pytest.param("listen", "listen: no-port", "host:port", id="invalid-listen"),
    pytest.param("leader_election.renew_deadline", "renew_deadline: 20",
                 "below lease_duration", id="renew-deadline-ge-lease"),
    pytest.param("targets", "targets:", "two targets are named 'smtp'", id="duplicate-targets"),
    pytest.param("targets[0].min_replicas", "min_replicas: 5", "must be <= max_replicas",
                 id="min-gt-max"),
    pytest.param("targets[0].cooldown.up", "up: abc", "invalid duration",
                 id="bad-cooldown-beside-min-gt-max"),
    pytest.param("targets[0].policies[0].tmeout", "tmeout: 1", "unknown key",
                 id="unknown-key-in-policy"),
    pytest.param("targets[0].policies[0].scale_down_below", "scale_down_below: 40",
                 "must be below scale_up_above", id="threshold-bounds"),
    pytest.param("targets[0].policies[1]", "type: nope", "unknown policy type",
                 id="unknown-policy-type"),
    pytest.param("targets[0].policies[2].query", "# no query", "required",
                 id="policy-query-missing"),
    pytest.param("targets[0].policies[2].scale_down_below", "scale_down_below: 10",
                 "must be below scale_up_above", id="threshold-bounds-without-query"),
    pytest.param("targets[0].guards[0].above", "query: sum(delivery", "`above`, `below`",
                 id="guard-without-bound"),
    pytest.param("targets[1].namespace", "name: imap", "needs `namespace`",
                 id="kubernetes-without-namespace"),
    pytest.param("targets[1].deployment", "deployment: web", "exactly one",
                 id="kubernetes-deployment-and-statefulset"),
    pytest.param("targets[2].fallback_replicas", "fallback_replicas: 9", "within [2, 3]",
                 id="fallback-outside-bounds"),
    pytest.param("targets[2].policies", "# two named dup", "two policies are named 'dup'",
                 id="duplicate-policy-names"),
    pytest.param("targets[3].fallback_replicas", "# neither policies",
                 "needs fallback_replicas", id="fallback-without-replicas"),
    pytest.param("targets[3].policies", "# neither policies", "`policies`, a `preset`",
                 id="neither-policies-nor-preset"),
    pytest.param("targets[4].max_replicas", "max_replicas: lots", "integer",
                 id="wrong-type-int"),
    pytest.param("targets[5].service", "name: noservice", "needs `service`",
                 id="swarm-without-service"),
]


@pytest.fixture
def bad_yaml(tmp_path: Path) -> tuple[Path, list[ConfigIssue]]:
    path = write(tmp_path, BAD_YAML)
    return path, issues_of(path)


@pytest.mark.parametrize(("key", "needle", "fragment"), BAD_YAML_ISSUES)
def test_every_error_is_reported_with_key_file_and_line(
    bad_yaml: tuple[Path, list[ConfigIssue]], key: str, needle: str, fragment: str
) -> None:
    path, issues = bad_yaml
    matching = [i for i in with_key(issues, key) if fragment in i.message]
    assert matching, f"{key}: no message with {fragment!r} in {with_key(issues, key)}"
    for issue in matching:
        assert issue.source == str(path)
        assert issue.line == line_of(BAD_YAML, needle)
        assert str(issue).startswith(f"{path}:{issue.line}: {key}: ")


def test_every_error_comes_in_one_config_error_one_line_each(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_YAML)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=NO_ENV)
    issues = info.value.issues
    assert len(issues) >= len(BAD_YAML_ISSUES)
    assert str(info.value).splitlines() == [str(i) for i in issues]
    assert len({(i.key, i.message) for i in issues}) == len(issues), "no issue is repeated"
    assert [i.line for i in issues] == sorted(i.line or 0 for i in issues), "in file order"


MIN_GT_MAX_TARGET = {"name": "smtp", "backend": "swarm", "service": "s", "min_replicas": 5,
                     "max_replicas": 2, "preset": "stalwart-smtp"}


@pytest.mark.parametrize(
    ("sibling", "sibling_key"),
    [
        pytest.param({"cooldown": {"up": "abc"}}, "targets[0].cooldown.up", id="cooldown.up"),
        pytest.param({"cooldown": {"dwn": "5m"}}, "targets[0].cooldown.dwn", id="cooldown-typo"),
        pytest.param({"backend": "nomad"}, "targets[0].backend", id="backend"),
        pytest.param({"name": "Not A Name"}, "targets[0].name", id="name-pattern"),
        pytest.param({"dry_run": "maybe"}, "targets[0].dry_run", id="dry_run"),
        pytest.param({"preset": "stalwart-pop3"}, "targets[0].preset", id="preset"),
        pytest.param({"behavior": {"scaleUp": {"selectPolicy": "Most"}}},
                     "targets[0].behavior.scaleUp.selectPolicy", id="behavior"),
        pytest.param({"policies": [{"type": "nope", "query": "q"}]}, "targets[0].policies[0]",
                     id="policy-type"),
        pytest.param({"fallback_replicas": "x"}, "targets[0].fallback_replicas",
                     id="fallback_replicas"),
        pytest.param({"extra": 1}, "targets[0].extra", id="unknown-key"),
    ],
)
def test_min_gt_max_is_reported_even_beside_an_invalid_sibling(
    sibling: dict[str, Any], sibling_key: str
) -> None:
    issues = issues_data(minimal(targets=[{**MIN_GT_MAX_TARGET, **sibling}]))
    assert {"targets[0].min_replicas", sibling_key} <= {i.key for i in issues}, issues
    (bounds,) = with_key(issues, "targets[0].min_replicas")
    assert bounds.message == "min_replicas (5) must be <= max_replicas (2)"


THRESHOLD = {"type": "threshold", "query": "q", "scale_up_above": 30, "scale_down_below": 30}


@pytest.mark.parametrize(
    ("change", "sibling_key"),
    [
        pytest.param({"query": None}, "query", id="query-missing"),
        pytest.param({"query": ""}, "query", id="query-empty"),
        pytest.param({"for": "5x"}, "for", id="bad-for"),
        pytest.param({"step": 0}, "step", id="bad-step"),
        pytest.param({"tmeout": 1}, "tmeout", id="unknown-key"),
    ],
)
def test_threshold_bounds_are_reported_even_beside_an_invalid_sibling(
    change: dict[str, Any], sibling_key: str
) -> None:
    policy = {k: v for k, v in {**THRESHOLD, **change}.items() if v is not None}
    target = {"name": "a", "backend": "swarm", "service": "s", "max_replicas": 3,
              "policies": [policy]}
    keys = {i.key for i in issues_data(minimal(targets=[target]))}
    base = "targets[0].policies[0]"
    assert {f"{base}.scale_down_below", f"{base}.{sibling_key}"} <= keys


# Neighbours of the rules above that are fine: the rules must not be over-eager.
@pytest.mark.parametrize(
    "target",
    [
        pytest.param({"backend": "kubernetes", "namespace": "m", "statefulset": "s"},
                     id="kubernetes-statefulset-only"),
        pytest.param({"backend": "kubernetes", "namespace": "m", "deployment": "d"},
                     id="kubernetes-deployment-only"),
        pytest.param({"min_replicas": 5, "max_replicas": 5}, id="min-equals-max"),
        pytest.param({"on_metric_error": "fallback", "fallback_replicas": 5},
                     id="fallback-at-max"),
        pytest.param({"on_metric_error": "fallback", "fallback_replicas": 1},
                     id="fallback-at-min"),
        pytest.param({"guards": [{"query": "g", "below": 1}]}, id="guard-below-only"),
        pytest.param({"preset": None, "policies": [{**THRESHOLD, "scale_down_below": None}]},
                     id="threshold-upper-only"),
        pytest.param({"preset": None, "policies": [{**THRESHOLD, "scale_down_below": 29.9}]},
                     id="threshold-down-just-below-up"),
        pytest.param({"policies": [{"type": "capacity", "query": "q"}]},
                     id="preset-plus-explicit-policy"),
    ],
)
def test_valid_neighbours_of_the_rules_load(target: dict[str, Any]) -> None:
    base = {"name": "a", "backend": "swarm", "service": "s", "max_replicas": 5,
            "preset": "stalwart-smtp"}
    merged = {**base, **target}
    if merged["backend"] == "kubernetes":
        del merged["service"]
    merged = {k: v for k, v in merged.items() if v is not None}
    for policy in merged.get("policies", []):
        for key in [k for k, v in policy.items() if v is None]:
            del policy[key]
    settings = load_config_data(minimal(targets=[merged]), environ=NO_ENV)
    assert settings.targets[0].name == "a"


@pytest.mark.parametrize(
    ("top", "key", "fragment"),
    [
        pytest.param({"leader_election": {"lease_duration": 15, "renew_deadline": 15}},
                     "leader_election.renew_deadline", "below lease_duration",
                     id="renew-equals-lease"),
        pytest.param({"leader_election": {"retry_period": 10}}, "leader_election.retry_period",
                     "below renew_deadline", id="retry-equals-renew"),
        pytest.param({"evaluation_interval": 0}, "evaluation_interval", "above 0",
                     id="evaluation-interval-zero"),
        pytest.param({"prometheus": {"timeout": 0}}, "prometheus.timeout", "above 0",
                     id="timeout-zero"),
        pytest.param({"simulation": {"scrape_interval": 0}}, "simulation.scrape_interval",
                     "above 0", id="scrape-interval-zero"),
        pytest.param({"prometheus": {"bearer_token_file": "/t",
                                     "basic_auth": {"username": "u", "password_file": "/p"}}},
                     "prometheus.bearer_token_file", "not both", id="two-auth-methods"),
        pytest.param({"prometheus": {"url": "http://"}}, "prometheus.url", "http",
                     id="url-without-host"),
        pytest.param({"listen": "127.0.0.1:99999"}, "listen", "host:port", id="listen-port"),
        pytest.param({"listen": ":9464"}, "listen", "host:port", id="listen-no-host"),
    ],
)
def test_block_rules_with_numbers(top: dict[str, Any], key: str, fragment: str) -> None:
    (issue,) = with_key(issues_data(minimal(**top)), key)
    assert fragment in issue.message


@pytest.mark.parametrize(
    ("top", "key"),
    [
        pytest.param({"leader_election": {"lease_duration": "15s", "renew_deadline": "20s"}},
                     "leader_election.renew_deadline", id="renew-deadline-20s-ge-lease-15s"),
        pytest.param({"leader_election": {"retry_period": "10s"}}, "leader_election.retry_period",
                     id="retry-period-10s-ge-renew-10s"),
        pytest.param({"evaluation_interval": "0s"}, "evaluation_interval",
                     id="evaluation-interval-0s"),
        pytest.param({"prometheus": {"timeout": "0s"}}, "prometheus.timeout", id="timeout-0s"),
        pytest.param({"simulation": {"scrape_interval": "0s"}}, "simulation.scrape_interval",
                     id="scrape-interval-0s"),
    ],
)
def test_block_rules_with_duration_strings(top: dict[str, Any], key: str) -> None:
    assert with_key(issues_data(minimal(**top)), key)


@pytest.mark.parametrize("drain_within", ["5x", -5, 0, "soon"], ids=str)
def test_invalid_preset_option_is_a_config_error(drain_within: object) -> None:
    target = yaml.safe_load(TARGET)["targets"][0]
    target["preset_options"] = {"drain_within": drain_within}
    issues = issues_data(minimal(targets=[target]))
    assert any(i.key.startswith("targets[0].preset_options") for i in issues), issues


def test_toml_errors_name_file_and_key(tmp_path: Path) -> None:
    text = """\
bogus = 1

[prometheus]
tmeout = "5s"

[[targets]]
name = "smtp"
backend = "swarm"
service = "s"
min_replicas = 5
max_replicas = 2
preset = "stalwart-smtp"
cooldown = { up = "abc" }

[[targets.policies]]
type = "threshold"
query = "q"
scale_up_above = 1
scale_down_below = 2
tmeout = 1
"""
    path = write(tmp_path, text, "bad.toml")
    issues = issues_of(path)
    expected = {
        "bogus": "unknown key",
        "prometheus.tmeout": "unknown key",
        "targets[0].min_replicas": "must be <= max_replicas",
        "targets[0].cooldown.up": "invalid duration",
        "targets[0].policies[0].tmeout": "unknown key",
        "targets[0].policies[0].scale_down_below": "must be below",
    }
    for key, fragment in expected.items():
        (issue,) = with_key(issues, key)
        assert fragment in issue.message
        assert issue.source == str(path)
    assert len(issues) == len(expected), issues


# --------------------------------------------------------------------------- file-level


def make_directory(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "line", "fragments"),
    [
        pytest.param(lambda p: p / "missing.yaml", None, ["cannot read"], id="missing-file"),
        pytest.param(make_directory, None, ["cannot read"], id="directory"),
        pytest.param(lambda p: write(p, "dry_run: false\nprometheus:\n  url: a: b\n"), 3,
                     ["invalid YAML"], id="invalid-yaml"),
        pytest.param(lambda p: write(p, "a: 1\n\tb: 2\n"), 2, ["invalid YAML"], id="yaml-tab"),
        pytest.param(lambda p: write(p, "a: 1\n---\nb: 2\n"), 2, ["invalid YAML"],
                     id="two-yaml-documents"),
        pytest.param(lambda p: write(p, "a: !!python/object:os.system x\n"), 1,
                     ["invalid YAML"], id="yaml-python-tag"),
        pytest.param(lambda p: write(p, "a: " + "[" * 1000 + "]" * 1000 + "\n"), None,
                     ["invalid YAML", "deep"], id="yaml-nested-too-deep"),
        pytest.param(lambda p: write(p, 'dry_run = false\nx = = 1\n', "c.toml"), None,
                     ["invalid TOML", "line 2"], id="invalid-toml"),
        pytest.param(lambda p: write(p, "- a\n- b\n"), 1, ["mapping"], id="yaml-list"),
        pytest.param(lambda p: write(p, "just text\n"), 1, ["mapping"], id="yaml-scalar"),
        pytest.param(lambda p: write(p, b"dry_run: \xff\xfe\n"), None, ["UTF-8"],
                     id="not-utf8"),
        pytest.param(lambda p: write(p, "a: \x00\n"), None, ["invalid YAML"], id="nul-byte"),
    ],
)
def test_file_level_errors(
    tmp_path: Path, make: Callable[[Path], Path], line: int | None, fragments: list[str]
) -> None:
    path = make(tmp_path)
    (issue,) = issues_of(path)
    assert issue.source == str(path)
    assert issue.line == line
    assert issue.key == ""
    for fragment in fragments:
        assert fragment in issue.message


@pytest.mark.parametrize(
    ("text", "name"),
    [
        pytest.param("", "c.yaml", id="empty-yaml"),
        pytest.param("# only a comment\n", "c.yaml", id="comment-only-yaml"),
        pytest.param("", "c.toml", id="empty-toml"),
        pytest.param("{}\n", "c.json", id="empty-json-object"),
    ],
)
def test_empty_file_needs_targets(tmp_path: Path, text: str, name: str) -> None:
    path = write(tmp_path, text, name)
    (issue,) = issues_of(path)
    assert (issue.key, issue.source) == ("targets", str(path))
    assert "required" in issue.message.lower()


@pytest.mark.parametrize("key", ["1", "null", "true", "1.5"])
def test_non_string_top_level_key_is_a_config_error(tmp_path: Path, key: str) -> None:
    issues = issues_of(write(tmp_path, f"{TARGET}{key}: 2\n"))
    assert issues[0].message


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "a = " + "[" * 3000 + "]" * 3000 + "\n", "c.toml"))
    assert "TOML" in issue.message


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("environ", "read", "expected"),
    [
        pytest.param({"AUTOSCALER_DRY_RUN": "true"}, lambda s: s.dry_run, True, id="dry-run"),
        pytest.param({"autoscaler_dry_run": "1"}, lambda s: s.dry_run, True,
                     id="dry-run-lower-case"),
        pytest.param({"AUTOSCALER_PROMETHEUS__URL": "http://prom.mail:9090/"},
                     lambda s: s.prometheus.url, "http://prom.mail:9090", id="prometheus-url"),
        pytest.param({"AUTOSCALER_PROMETHEUS__TIMEOUT": "30s"}, lambda s: s.prometheus.timeout,
                     30.0, id="prometheus-timeout"),
        pytest.param({"AUTOSCALER_EVALUATION_INTERVAL": "1m"}, lambda s: s.evaluation_interval,
                     60.0, id="evaluation-interval"),
        pytest.param({"AUTOSCALER_PROMETHEUS__TIMEOUT": "30s"},
                     lambda s: s.prometheus.url, "http://127.0.0.1:9090",
                     id="nested-override-keeps-siblings"),
        pytest.param({"AUTOSCALER_LEADER_ELECTION__MODE": "none"},
                     lambda s: s.leader_election.mode, "none", id="leader-mode"),
        pytest.param({"AUTOSCALER_SIMULATION__STARTUP_DELAY": "2m"},
                     lambda s: s.simulation.startup_delay, 120.0, id="simulation"),
        pytest.param({"AUTOSCALER_PROMETHEUS": '{"url": "https://p:1", "timeout": "7s"}'},
                     lambda s: (s.prometheus.url, s.prometheus.timeout), ("https://p:1", 7.0),
                     id="prometheus-as-json"),
        pytest.param({"AUTOSCALER_TARGETS": json.dumps([
            {"name": "solo", "backend": "kubernetes", "namespace": "mail",
             "deployment": "stalwart", "max_replicas": 4, "preset": "stalwart-http"}])},
                     lambda s: [(t.name, t.backend, t.deployment) for t in s.targets],
                     [("solo", "kubernetes", "stalwart")], id="targets-replaced-whole"),
        pytest.param({"OTHER_DRY_RUN": "true", "DRY_RUN": "true"}, lambda s: s.dry_run, False,
                     id="unprefixed-ignored"),
    ],
)
def test_environment_overrides_the_file(
    environ: dict[str, str], read: Callable[[Settings], Any], expected: Any
) -> None:
    assert read(load_config(EXAMPLE, environ=environ)) == expected


def test_file_value_is_used_without_environment() -> None:
    data = example_data()
    data["dry_run"] = True
    assert load_config_data(data, environ=NO_ENV).dry_run is True
    assert load_config_data(data, environ={"AUTOSCALER_DRY_RUN": "false"}).dry_run is False


@pytest.mark.parametrize(
    ("environ", "variable", "key"),
    [
        pytest.param({"AUTOSCALER_DRY_RUN": "maybe"}, "DRY_RUN", "dry_run", id="dry-run"),
        pytest.param({"AUTOSCALER_PROMETHEUS__TIMEOUT": "5x"}, "PROMETHEUS__TIMEOUT",
                     "prometheus.timeout", id="timeout"),
        pytest.param({"AUTOSCALER_PROMETHEUS__URL": "ftp://x"}, "PROMETHEUS__URL",
                     "prometheus.url", id="url"),
        pytest.param({"AUTOSCALER_EVALUATION_INTERVAL": "-1s"}, "EVALUATION_INTERVAL",
                     "evaluation_interval", id="evaluation-interval"),
        pytest.param({"AUTOSCALER_EVALUATION_INTERVAL": "0"}, "EVALUATION_INTERVAL",
                     "evaluation_interval", id="evaluation-interval-zero"),
        pytest.param({"AUTOSCALER_LISTEN": "nowhere"}, "LISTEN", "listen", id="listen"),
        pytest.param({"AUTOSCALER_PROMETHEUS__TMEOUT": "5s"}, "PROMETHEUS__TMEOUT",
                     "prometheus.tmeout", id="unknown-nested"),
        pytest.param({"AUTOSCALER_TARGETS": "[]"}, "TARGETS", "targets", id="targets-empty"),
        pytest.param({"AUTOSCALER_LEADER_ELECTION__RENEW_DEADLINE": "20",
                      "AUTOSCALER_LEADER_ELECTION__LEASE_DURATION": "15"},
                     "LEADER_ELECTION__RENEW_DEADLINE", "leader_election.renew_deadline",
                     id="cross-field"),
    ],
)
def test_invalid_environment_value_names_the_variable(
    environ: dict[str, str], variable: str, key: str
) -> None:
    (issue,) = issues_of(EXAMPLE, environ)
    assert (issue.source, issue.key, issue.line) == (f"environment AUTOSCALER_{variable}", key,
                                                     None)
    assert issue.message


def test_invalid_target_in_environment_names_the_variable_and_the_key() -> None:
    targets = [{"name": "x", "backend": "swarm", "max_replicas": 3, "preset": "stalwart-smtp"}]
    (issue,) = issues_of(EXAMPLE, {"AUTOSCALER_TARGETS": json.dumps(targets)})
    assert (issue.source, issue.key) == ("environment AUTOSCALER_TARGETS", "targets[0].service")


def test_environment_and_file_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, TARGET + "bogus: 1\n")
    issues = issues_of(path, {"AUTOSCALER_DRY_RUN": "maybe"})
    assert {(i.source, i.key) for i in issues} == {
        (str(path), "bogus"), ("environment AUTOSCALER_DRY_RUN", "dry_run")}


@pytest.mark.parametrize("value", ["[{", "not json", "[1,]", "{'a': 1}"])
def test_invalid_json_in_targets_variable_is_a_config_error(value: str) -> None:
    issues = issues_of(EXAMPLE, {"AUTOSCALER_TARGETS": value})
    assert any("targets" in i.message and i.source.startswith("environment") for i in issues)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"AUTOSCALER_TARGETS": "[{"},
                     {("environment AUTOSCALER_TARGETS", "targets")}, id="names-the-variable"),
        pytest.param({"AUTOSCALER_TARGETS": "[{", "AUTOSCALER_DRY_RUN": "maybe"},
                     {("environment AUTOSCALER_TARGETS", "targets"),
                      ("environment AUTOSCALER_DRY_RUN", "dry_run")}, id="other-vars-checked"),
    ],
)
def test_invalid_json_in_environment_names_variable_and_key(
    environ: dict[str, str], expected: set[tuple[str, str]]
) -> None:
    assert {(i.source, i.key) for i in issues_of(EXAMPLE, environ)} == expected


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"AUTOSCALER_TARGETS": '{"name": "x"}'}, id="targets-object-not-list"),
        pytest.param({"AUTOSCALER_TARGETS__0__MAX_REPLICAS": "5"}, id="targets-nested"),
    ],
)
def test_environment_error_on_targets_is_blamed_on_the_variable(
    environ: dict[str, str]
) -> None:
    (issue,) = issues_of(EXAMPLE, environ)
    assert issue.source.startswith("environment AUTOSCALER_TARGETS")


# --------------------------------------------------------------------------- presets

STALWART_METRICS = {
    "queue_queue_message", "queue_queue_message_authenticated", "delivery_completed",
    "delivery_active_connections", "queue_count", "imap_active_connections",
    "http_active_connections",
}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def preset_target(preset: str, **extra: Any) -> dict[str, Any]:
    return {"name": "t", "backend": "swarm", "service": "stalwart", "max_replicas": 10,
            "preset": preset, **extra}


def test_smtp_preset_expands_to_its_policies_and_guard() -> None:
    target = load_config_data(minimal(targets=[preset_target("stalwart-smtp")]),
                              environ=NO_ENV).targets[0]
    policies = target.effective_policies()
    # Community edition: the inflow forecast, the CPU backstop (no net-inflow queue policy)
    # and seasonal on the same inflow (silent until its history shows a recurring burst).
    assert [(p.label, p.type) for p in policies] == [
        ("inflow", "forecast"), ("cpu", "threshold"), ("inflow_seasonal", "seasonal")]
    assert policies[2].query == policies[0].query
    assert policies[2].mode == "active" and policies[2].lead == 150.0  # type: ignore[attr-defined]
    assert "[1m]" in policies[0].query, "the forecast reads the 1m inflow rate"
    assert policies[1].scale_up_above == 90.0  # type: ignore[attr-defined]
    assert [g.label for g in target.effective_guards()] == ["active_deliveries"]
    assert all(p.simulate_as for p in policies), "presets set simulate_as themselves"
    assert "or vector(0)" in policies[0].query, "absent counters read as 0"
    assert 'service_name="stalwart"' in policies[1].query, "default CPU query names the service"


@pytest.mark.parametrize(
    ("preset", "labels", "guards"),
    [
        pytest.param("stalwart-imap", ["imap_sessions", "cpu", "imap_sessions_seasonal"], [],
                     id="imap"),
        pytest.param("stalwart-http", ["http_sessions", "cpu", "http_sessions_seasonal"], [],
                     id="http"),
        pytest.param("stalwart-all", ["inflow", "imap_sessions", "cpu", "inflow_seasonal",
                                      "imap_sessions_seasonal"],
                     ["active_deliveries"], id="all"),
    ],
)
def test_other_presets_expand(preset: str, labels: list[str], guards: list[str]) -> None:
    target = load_config_data(minimal(targets=[preset_target(preset)]), environ=NO_ENV).targets[0]
    assert [p.label for p in target.effective_policies()] == labels
    assert [g.label for g in target.effective_guards()] == guards


@pytest.mark.parametrize("edition", ["community", "enterprise"])
@pytest.mark.parametrize("preset", ["stalwart-smtp", "stalwart-imap", "stalwart-http",
                                    "stalwart-all"])
def test_prefix_is_in_every_stalwart_metric(preset: str, edition: str) -> None:
    target = load_config_data(
        minimal(targets=[preset_target(preset, prefix="stalwart_",
                                       preset_options={"edition": edition})]),
        environ=NO_ENV,
    ).targets[0]
    queries = [p.query for p in target.effective_policies()]
    queries += [g.query for g in target.effective_guards()]
    seen = set()
    for query in queries:
        for name in IDENTIFIER.findall(query):
            bare = name.removeprefix("stalwart_")
            if bare in STALWART_METRICS:
                assert name == f"stalwart_{bare}", f"{name} in {query}"
                seen.add(bare)
    assert seen, "the preset reads Stalwart metrics"


@pytest.mark.parametrize(
    ("edition", "queue_queries"),
    [
        pytest.param("enterprise", ["max(stalwart_queue_count)"], id="enterprise"),
        # No depth gauge: no queue policy (its net-inflow stand-in lagged by minutes).
        pytest.param("community", [], id="community"),
    ],
)
def test_edition_picks_the_queue_depth_query(edition: str, queue_queries: list[str]) -> None:
    target = load_config_data(
        minimal(targets=[preset_target("stalwart-smtp", prefix="stalwart_",
                                       preset_options={"edition": edition})]),
        environ=NO_ENV,
    ).targets[0]
    queues = [p for p in target.effective_policies() if p.label == "queue"]
    assert [q.query for q in queues] == queue_queries
    assert all(q.signal == "depth" for q in queues)  # type: ignore[attr-defined]


def test_explicit_policies_come_after_the_presets() -> None:
    explicit = [{"type": "threshold", "name": "latency", "query": "latency",
                 "scale_up_above": 2.0},
                {"type": "capacity", "name": "mine", "query": "q"}]
    target = load_config_data(
        minimal(targets=[preset_target("stalwart-smtp", policies=explicit,
                                       guards=[{"query": "g", "above": 1}])]),
        environ=NO_ENV,
    ).targets[0]
    assert [p.label for p in target.effective_policies()] == [
        "inflow", "cpu", "inflow_seasonal", "latency", "mine"]
    assert [g.label for g in target.effective_guards()] == ["active_deliveries", "guard:g"]


def test_explicit_policy_named_like_a_preset_one_is_a_duplicate() -> None:
    explicit = [{"type": "threshold", "name": "cpu", "query": "q", "scale_up_above": 1}]
    issues = issues_data(minimal(targets=[preset_target("stalwart-smtp", policies=explicit)]))
    (issue,) = with_key(issues, "targets[0].policies")
    assert "'cpu'" in issue.message


def test_kubernetes_preset_cpu_query_selects_the_workload_pods() -> None:
    target = {"name": "t", "backend": "kubernetes", "namespace": "mail",
              "statefulset": "stalwart", "max_replicas": 5, "preset": "stalwart-imap"}
    settings = load_config_data(minimal(targets=[target]), environ=NO_ENV)
    (cpu,) = [p for p in settings.targets[0].effective_policies() if p.label == "cpu"]
    assert 'namespace="mail"' in cpu.query
    assert 'pod=~"stalwart-[0-9]+"' in cpu.query, "a StatefulSet's pods: <name>-<ordinal>"


# --------------------------------------------------------------------------- schema, redaction


def schema_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in schema_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in schema_refs(v)]
    return []


def test_config_schema_structure() -> None:
    schema = config_schema()
    json.dumps(schema)  # plain JSON data
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"targets", "evaluation_interval", "prometheus", "listen"} <= set(schema["properties"])
    assert "targets" in schema["required"]
    assert schema["additionalProperties"] is False, "unknown keys are errors"
    defs = schema["$defs"]
    for ref in schema_refs(schema):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs, ref
    policies = defs["TargetConfig"]["properties"]["policies"]["items"]
    referenced = {r.rsplit("/", 1)[1] for r in schema_refs(policies)}
    assert {"ThresholdPolicy", "QueueTrendPolicy", "CapacityPolicy",
            "TargetValuePolicy"} <= referenced
    assert "for" in defs["ThresholdPolicy"]["properties"], "aliases, as written in files"


@pytest.mark.parametrize(
    ("text", "matches"),
    [("15s", True), ("1h30m", True), ("90", True), ("500ms", True), ("5x", False),
     ("-1s", False), ("abc", False)],
)
def test_schema_duration_pattern(text: str, matches: bool) -> None:
    evaluation = config_schema()["properties"]["evaluation_interval"]
    (string,) = [s for s in evaluation["anyOf"] if s.get("type") == "string"]
    assert bool(re.search(string["pattern"], text)) is matches


def test_config_schema_validates_with_jsonschema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(example_data())


def test_redacted_dump_hides_header_values_only() -> None:
    headers = {"Authorization": "Bearer s3cr3t-token", "X-Scope-OrgID": "tenant-42"}
    settings = load_config_data(minimal(prometheus={"headers": headers}), environ=NO_ENV)
    dumped = redacted_dump(settings)
    assert dumped["prometheus"]["headers"] == dict.fromkeys(headers, "<redacted>")
    text = json.dumps(dumped)
    assert "s3cr3t" not in text and "tenant-42" not in text
    assert settings.prometheus.headers == headers, "the live settings keep the real values"
    assert dumped["prometheus"]["url"] == "http://127.0.0.1:9090"


# --------------------------------------------------------------------------- fuzz

@hyp_settings(
    max_examples=examples(300, "AUTOSCALER_FUZZ_EXAMPLES"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(content=file_contents, environ=st.one_of(st.just(NO_ENV), environments))
def test_fuzz_load_config_returns_settings_or_config_error(
    content: tuple[str, str | bytes], environ: dict[str, str]
) -> None:
    suffix, body = content
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"config{suffix}"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8")
        try:
            settings = load_config(path, environ=environ)
        except ConfigError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert isinstance(issue.message, str) and issue.message.strip(), issue
                assert issue.source, issue
                assert str(issue)
        else:
            assert isinstance(settings, Settings)
            assert settings.targets
            json.dumps(redacted_dump(settings))
