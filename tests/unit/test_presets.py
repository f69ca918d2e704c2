"""Presets: a 0 that stands for an absent counter is only given while Stalwart is scraped."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from autoscaler.config import ConfigError, load_config_data
from autoscaler.presets import PRESET_NAMES
from autoscaler.sources.stalwart_api import QueueApiSpec

GATE = re.compile(r'\) and on\(\) count\((\w*)smtp_active_connections(\{(?:[^}"]|"[^"]*")*\})?\)$')


def preset_queries(preset: str, prefix: str, edition: str) -> list[str]:
    target = load_config_data({"targets": [{
        "name": "t", "backend": "swarm", "service": "stalwart", "max_replicas": 10,
        "preset": preset, "prefix": prefix, "preset_options": {"edition": edition}}]},
        environ={}).targets[0]
    return ([p.query for p in target.effective_policies()]
            + [g.query for g in target.effective_guards()])


@pytest.mark.parametrize("edition", ["community", "enterprise"])
@pytest.mark.parametrize("prefix", ["", "stalwart_"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_zero_for_an_absent_series_is_gated_on_a_scraped_node(
        preset: str, prefix: str, edition: str) -> None:
    """`or vector(0)` alone would read an unscraped cluster as idle and scale it to min."""
    for query in preset_queries(preset, prefix, edition):
        if "vector(0)" not in query:
            continue
        gate = GATE.search(query)
        assert gate is not None, query
        assert gate.group(1) == prefix, query


@pytest.mark.parametrize(
    ("preset", "gated"),
    [
        pytest.param("stalwart-smtp", {"inflow", "active_deliveries", "inflow_seasonal"},
                     id="smtp"),
        pytest.param("stalwart-all", {"inflow", "active_deliveries", "inflow_seasonal"},
                     id="all"),
        pytest.param("stalwart-imap", set(), id="imap"),  # no counter, no 0 to give
        pytest.param("stalwart-http", set(), id="http"),
    ],
)
def test_which_signals_are_gated(preset: str, gated: set[str]) -> None:
    target = load_config_data({"targets": [{
        "name": "t", "backend": "swarm", "service": "stalwart", "max_replicas": 10,
        "preset": preset}]}, environ={}).targets[0]
    labelled = [(p.label, p.query) for p in target.effective_policies()]
    labelled += [(g.label, g.query) for g in target.effective_guards()]
    assert {label for label, query in labelled if GATE.search(query)} == gated


# --------------------------------------------------------------------------- scope (#11 item 1)

# Stalwart's per-node series the presets read; queue_count is cluster-wide (set by the
# metrics.calculate nodes for the whole shared queue) and stays unscoped.
PER_NODE = ("queue_queue_message", "queue_queue_message_authenticated", "delivery_completed",
            "delivery_active_connections", "smtp_active_connections", "imap_active_connections",
            "http_active_connections")
CLUSTER_WIDE = ("queue_count",)
CADVISOR = ("container_cpu_usage_seconds_total", "container_spec_cpu_quota",
            "container_spec_cpu_period", "container_spec_cpu_shares",
            "container_memory_working_set_bytes", "container_spec_memory_limit_bytes")
SELECTOR = re.compile(r'\b([a-z_]+)(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?')

SWARM = {"backend": "swarm", "service": "mail_smtp"}
DEPLOYMENT = {"backend": "kubernetes", "namespace": "mail", "deployment": "smtp"}
STATEFULSET = {"backend": "kubernetes", "namespace": "mail", "statefulset": "smtp"}
K8S_PODS_DEPLOYMENT = 'namespace="mail",pod=~"smtp-[a-z0-9]+-[a-z0-9]{5}"'
K8S_PODS_STATEFULSET = 'namespace="mail",pod=~"smtp-[0-9]+"'


def expanded(workload: Mapping[str, object], preset: str = "stalwart-all", **options: object,
             ) -> list[str]:
    target = load_config_data({"targets": [{
        "name": "t", "max_replicas": 10, "preset": preset, "prefix": "stalwart_",
        "preset_options": {"edition": "enterprise", "memory": True, **options},
        **workload}]}, environ={}).targets[0]
    return ([p.query for p in target.effective_policies()]
            + [g.query for g in target.effective_guards()])


def selectors_of(queries: list[str], names: tuple[str, ...], prefix: str = "") -> list[str]:
    found = [(m.group(2) or "") for q in queries for m in SELECTOR.finditer(q)
             if m.group(1) in {prefix + n for n in names}]
    assert found, f"none of {names} in {queries}"
    return found


@pytest.mark.parametrize(
    ("workload", "selector", "container_selector"),
    [
        pytest.param(SWARM, 'service="mail_smtp"',
                     'container_label_com_docker_swarm_service_name="mail_smtp"', id="swarm"),
        pytest.param(DEPLOYMENT, K8S_PODS_DEPLOYMENT,
                     K8S_PODS_DEPLOYMENT + ',container!="",container!="POD"', id="deployment"),
        pytest.param(STATEFULSET, K8S_PODS_STATEFULSET,
                     K8S_PODS_STATEFULSET + ',container!="",container!="POD"', id="statefulset"),
    ],
)
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_per_node_selector_is_scoped_to_the_target(
        workload: dict[str, object], selector: str, container_selector: str,
        preset: str) -> None:
    """Unscoped, idle nodes of another service dilute the averages and weaken the guard."""
    queries = expanded(workload, preset)
    assert set(selectors_of(queries, PER_NODE, "stalwart_")) == {"{" + selector + "}"}
    assert set(selectors_of(queries, CADVISOR)) == {"{" + container_selector + "}"}
    if preset in ("stalwart-smtp", "stalwart-all"):
        assert set(selectors_of(queries, CLUSTER_WIDE, "stalwart_")) == {""}


@pytest.mark.parametrize(
    ("options", "selector", "container_selector"),
    [
        pytest.param({"selector": 'job="smtp"', "container_selector": 'name=~"smtp.*"'},
                     '{job="smtp"}', '{name=~"smtp.*"}', id="both-given"),
        pytest.param({"selector": "", "container_selector": ""}, "", "", id="unscoped"),
        pytest.param({"selector": ' job="a", x!~"b" ,'}, '{job="a", x!~"b"}',
                     '{container_label_com_docker_swarm_service_name="mail_smtp"}',
                     id="trimmed-and-default-container"),
    ],
)
def test_selectors_given_in_preset_options(options: dict[str, str], selector: str,
                                           container_selector: str) -> None:
    queries = expanded(SWARM, **options)
    assert set(selectors_of(queries, PER_NODE, "stalwart_")) == {selector}
    assert set(selectors_of(queries, CADVISOR)) == {container_selector}


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param('{service="a"}', id="braces"),
        pytest.param("service=a", id="unquoted"),
        pytest.param('service=="a"', id="double-equals"),
        pytest.param('service="a" job="b"', id="no-comma"),
        pytest.param('9x="a"', id="bad-label-name"),
    ],
)
def test_a_selector_that_is_not_label_matchers_is_a_config_error(selector: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data({"targets": [{
            "name": "t", "max_replicas": 10, "preset": "stalwart-smtp",
            "preset_options": {"selector": selector}, **SWARM}]}, environ={})
    assert [i.key for i in info.value.issues] == ["targets[0].preset_options.selector"]


def two_targets(first: dict[str, object], second: dict[str, object]) -> list[str]:
    data = {"targets": [
        {"name": "a", "max_replicas": 10, "preset": "stalwart-smtp", **first},
        {"name": "b", "max_replicas": 10, "preset": "stalwart-imap", **second}]}
    try:
        load_config_data(data, environ={})
    except ConfigError as exc:
        return [f"{i.key}: {i.message}" for i in exc.issues]
    return []


@pytest.mark.parametrize(
    ("first", "second", "error"),
    [
        pytest.param(SWARM, {**SWARM, "service": "mail_imap"}, False, id="two-services"),
        pytest.param(SWARM, {**SWARM, "dry_run": True}, True, id="same-service"),
        pytest.param({**SWARM, "preset_options": {"selector": "", "container_selector": ""}},
                     {**SWARM, "service": "mail_imap",
                      "preset_options": {"selector": "", "container_selector": ""}},
                     True, id="both-unscoped"),
        pytest.param({**SWARM, "preset_options": {"selector": 'service="x"'}},
                     {**SWARM, "service": "mail_imap",
                      "preset_options": {"selector": 'service="x"'}},
                     False, id="same-selector-other-containers"),
        pytest.param(DEPLOYMENT, STATEFULSET, False, id="deployment-vs-statefulset"),
        pytest.param(DEPLOYMENT, {**DEPLOYMENT, "namespace": "other"}, False,
                     id="two-namespaces"),
    ],
)
def test_two_preset_targets_with_identical_selectors_is_an_error(
        first: dict[str, object], second: dict[str, object], error: bool) -> None:
    issues = two_targets(first, second)
    if error:
        assert len(issues) == 1, issues
        assert issues[0].startswith("targets: targets 'a' and 'b' have identical effective "
                                    "preset selectors")
    else:
        assert issues == []


# --------------------------------------------------------------------------- CPU (#11 item 3)


@pytest.mark.parametrize(
    ("workload", "request_branch"),
    [
        pytest.param(SWARM, False, id="swarm-limit-only"),  # reservations are not in cAdvisor
        pytest.param(DEPLOYMENT, True, id="kubernetes-limit-else-request"),
    ],
)
def test_default_cpu_is_relative_to_the_limit_else_the_request(
        workload: dict[str, object], request_branch: bool) -> None:
    target = load_config_data({"targets": [{
        "name": "t", "max_replicas": 10, "preset": "stalwart-imap", **workload}]},
        environ={}).targets[0]
    (cpu,) = [p.query for p in target.effective_policies() if p.label == "cpu"]
    branches = cpu.removeprefix("avg(").removesuffix(") * 100").split(" or ")
    assert "container_spec_cpu_quota" in branches[0] and "container_spec_cpu_period" in branches[0]
    assert ("container_spec_cpu_shares" in cpu) == request_branch
    if request_branch:
        assert "> 2) / 1024" in branches[1]
    assert branches[-1].startswith("rate(container_cpu_usage_seconds_total"), "per core last"
    assert len(branches) == (3 if request_branch else 2)


@pytest.mark.parametrize(
    ("options", "memory"),
    [
        pytest.param({}, None, id="off-by-default"),
        pytest.param({"memory": True}, "container_spec_memory_limit_bytes", id="limit"),
        pytest.param({"memory_query": "avg(mem)"}, "avg(mem)", id="own-query"),
    ],
)
def test_memory_is_relative_to_the_limit(options: dict[str, object], memory: str | None) -> None:
    target = load_config_data({"targets": [{
        "name": "t", "max_replicas": 10, "preset": "stalwart-imap",
        "preset_options": options, **SWARM}]}, environ={}).targets[0]
    found = [p.query for p in target.effective_policies() if p.label == "memory"]
    if memory is None:
        assert found == []
    else:
        assert len(found) == 1 and memory in found[0]


# ------------------------------------------------------------------ queue API (#11 item 10)

QUEUE_API = {"url": "http://stalwart:8080", "password_file": "/run/secrets/admin",
             "every": "2m"}


@pytest.mark.parametrize(
    ("options", "queue"),
    [
        pytest.param({"queue_api": QUEUE_API},
                     "stalwart_queue_total url=http://stalwart:8080 user=admin "
                     "password_file=/run/secrets/admin every=120s timeout=5s",
                     id="community-with-api"),
        pytest.param({}, None, id="community-without-api"),
        pytest.param({"edition": "enterprise", "queue_api": QUEUE_API}, "max(queue_count)",
                     id="enterprise-keeps-queue-count"),
    ],
)
def test_community_preset_reads_the_queue_depth_from_the_api_when_configured(
        options: dict[str, object], queue: str | None) -> None:
    target = load_config_data({"targets": [{
        "name": "t", "max_replicas": 10, "preset": "stalwart-smtp", "preset_options": options,
        **SWARM}]}, environ={}).targets[0]
    queues = [p for p in target.effective_policies() if p.label == "queue"]
    assert [p.query for p in queues] == ([queue] if queue else [])
    if queue and queue.startswith("stalwart_queue_total"):
        assert QueueApiSpec.parse(queue).every == 120.0


@pytest.mark.parametrize(
    ("api", "key"),
    [
        pytest.param({**QUEUE_API, "url": "http://admin:pw@stalwart:8080"}, "url",
                     id="credentials-in-url"),
        pytest.param({**QUEUE_API, "url": "stalwart:8080"}, "url", id="no-scheme"),
        pytest.param({"url": "http://s:8080"}, "password_file", id="no-password-file"),
        pytest.param({**QUEUE_API, "every": "0s"}, "every", id="zero-interval"),
        pytest.param({**QUEUE_API, "password": "x"}, "password", id="no-inline-password"),
    ],
)
def test_a_bad_queue_api_is_a_config_error(api: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data({"targets": [{
            "name": "t", "max_replicas": 10, "preset": "stalwart-smtp",
            "preset_options": {"queue_api": api}, **SWARM}]}, environ={})
    assert [i.key for i in info.value.issues] == [f"targets[0].preset_options.queue_api.{key}"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        pytest.param("stalwart_queue_total url=http://s:8080 password_file=/p", None, id="ok"),
        pytest.param("stalwart_queue_total password_file=/p", "needs url=", id="no-url"),
        pytest.param("stalwart_queue_total url=http://s:8080", "needs password_file=",
                     id="no-file"),
        pytest.param("stalwart_queue_total url=http://s:8080 password_file=/p colour=red",
                     "unknown key 'colour'", id="unknown-key"),
        pytest.param("stalwart_queue_total url=http://u:p@s password_file=/p",
                     "without credentials", id="credentials-in-url"),
        pytest.param("stalwart_queue_total url=http://s password_file=/p every=soon",
                     "soon", id="bad-duration"),
        pytest.param("sum(queue_count)", "not a stalwart_queue_total query", id="promql"),
    ],
)
def test_queue_api_query_parsing(query: str, error: str | None) -> None:
    if error is None:
        spec = QueueApiSpec.parse(query)
        assert (spec.url, spec.user, spec.every, spec.timeout) == ("http://s:8080", "admin",
                                                                   60.0, 5.0)
        assert QueueApiSpec.parse(spec.query()) == spec
    else:
        with pytest.raises(ValueError, match=re.escape(error)):
            QueueApiSpec.parse(query)
