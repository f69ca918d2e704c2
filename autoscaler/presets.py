"""Stalwart presets: ready policies and guards built on Stalwart's real metric names.

Facts they rely on (STALWART.md): metric ids become names with every non-alphanumeric
character replaced by `_`, with no `_total` and no prefix unless the operator relabels one
in; counters are per node, reset on restart and absent until their first event, so every
rate is wrapped in `or vector(0)` where 0 is the truth; the community edition has no queue
depth gauge (net inflow stands in), the Enterprise edition exports `queue_count` (use max());
a node stopped with SIGTERM drops in-flight deliveries, hence the scale-down guard on
`delivery_active_connections`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from autoscaler.units import Duration

PRESET_NAMES = ("stalwart-smtp", "stalwart-imap", "stalwart-http", "stalwart-all")
Preset = Literal["stalwart-smtp", "stalwart-imap", "stalwart-http", "stalwart-all"]


GUIDE_CPU = 70.0  # the guide's rule: more instances above 70 % CPU
# SMTP is sized by the inflow forecast with a small headroom, so ~90 % busy is its normal
# state; a 70 % CPU rule would add an instance the forecast takes back (flapping). CPU stays
# as the backstop for a wrong `per_instance`: a saturated node (95 % in the plant) trips it.
SMTP_CPU_BACKSTOP = 90.0


_WS = r"[ \t\r\n]*"
# a quoted value: no NUL (refused in every text) and no control character after a backslash
_VALUE = r'"(?:[^"\\\x00]|\\[^\x00-\x1f])*"'
_MATCHER = rf"{_WS}[a-zA-Z_][a-zA-Z0-9_]*{_WS}(?:=~|!~|!=|=){_WS}{_VALUE}{_WS}"
MATCHERS = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*")
"""A comma-separated list of PromQL label matchers, without the braces."""
# What `selector`/`container_selector` accept, as the validator and the config schema say it:
# matchers, or nothing (blank).
# Blank or commas at either end are tolerated (and trimmed), as a hand-edited list often has.
_EDGE = r"[ \t\r\n,]*"
SELECTOR_PATTERN = rf"^{_EDGE}(?:{_MATCHER}(?:,{_MATCHER})*)?{_EDGE}$"


# The pattern on the string itself (not beside `anyOf: [string, null]`, where a generator or
# an editor's completion would miss it); validated by `PresetOptions._selector` (a clear message).
Selector = Annotated[str, WithJsonSchema({"type": "string", "pattern": SELECTOR_PATTERN})]


QUEUE_API_QUERY = "stalwart_queue_total"
"""The `query` of a policy read from Stalwart's management API (sources/stalwart_api.py)."""


class QueueApiOptions(BaseModel):
    """Stalwart's management API, for the queue depth the community edition does not export."""

    # strict numbers, no NaN/±Inf: as every config block (see config.models)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    url: str = Field(..., pattern=r"^https?://[^/@\x00-\x20\x7f]+/?$",
                     description="base URL of a Stalwart node's HTTP listener, e.g. "
                                 "http://stalwart:8080 (no credentials in it)")
    password_file: str = Field(..., min_length=1, pattern=r"^[^\x00-\x20\x7f]+$",
                               description="file holding the admin's password (read at "
                                           "every call)")
    user: str = Field("admin", pattern=r"^[^\x00-\x20\x7f]+$",
                      description="an admin with the message-queue-list permission")
    every: Duration = Field(60.0, gt=0, description="at most one call per this long: each "
                                                    "call scans the whole queue")
    timeout: Duration = Field(5.0, gt=0)

    def query(self) -> str:
        """The policy query that names this endpoint."""
        return (f"{QUEUE_API_QUERY} url={self.url.rstrip('/')} user={self.user} "
                f"password_file={self.password_file} every={self.every:g}s "
                f"timeout={self.timeout:g}s")


class PresetOptions(BaseModel):
    """Knobs of the presets; every one has a default that suits a typical cluster."""

    # strict numbers, no NaN/±Inf: as every config block (see config.models)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    edition: Literal["community", "enterprise"] = Field(
        "community", description="enterprise exports queue_count; community uses net inflow"
    )
    cpu_query: str | None = Field(
        None, min_length=1,
        description="average CPU % per instance; default: cAdvisor for the workload",
    )
    memory_query: str | None = Field(
        None, min_length=1, description="average memory % of limit per instance; default: none"
    )
    cpu_scale_up_above: float | None = Field(
        None, gt=0, le=100,
        description="default 90 where the inflow forecast sizes (smtp, all: a backstop, "
                    "the forecast runs nodes ~90 % busy), 70 (the guide's) for imap/http",
    )
    memory_scale_up_above: float = Field(80.0, gt=0, le=100)
    per_instance: float = Field(10000.0, gt=0, description="emails/hour one instance handles")
    headroom: float = Field(
        1.1, ge=1.0,
        description="factor over the forecast inflow (the forecast removes the lag the "
                    "guide's 1.5 covers; what is left is noise)",
    )
    hysteresis: float = Field(
        0.1, ge=0, description="fraction of one instance left spare before a scale-down"
    )
    lead: Duration = Field(
        90.0, ge=0, description="how far ahead the inflow is forecast: start-up + 1m rate lag"
    )
    drain_within: Duration = Field(900.0, gt=0, description="time to drain a backlog in")
    seasonal: Literal["active", "observe", "off"] = Field(
        "active",
        description="the `seasonal` policy on the inflow (smtp, all) and on the sessions "
                    "(imap, http, all): silent until its history shows a recurring burst; "
                    "observe: forecast, record and export only; off: none",
    )
    seasonal_lead: Duration = Field(
        150.0, ge=0,
        description="how far ahead seasonal is ready: start-up (60 s) + the 30 s scale-up "
                    "window + a tick + the 1m rate's lag in the history",
    )
    max_active_deliveries: float = Field(
        20.0, ge=0,
        description="no scale-down while a node has more outbound deliveries in flight "
                    "(average per node)",
    )
    connections_per_instance: float = Field(
        2000.0, gt=0, description="IMAP/HTTP sessions one instance should hold"
    )
    selector: Selector | None = Field(
        None,
        description="label matchers added to every per-node Stalwart metric of the preset's "
                    "queries and guards, e.g. 'service=\"mail_smtp\"'; default: swarm "
                    "service=\"<service>\", kubernetes namespace=\"<ns>\" and pod=~ the "
                    "workload's pod names; \"\" reads every scraped node",
    )
    container_selector: Selector | None = Field(
        None,
        description="label matchers of the workload's cAdvisor series; default: swarm "
                    "container_label_com_docker_swarm_service_name=\"<service>\", kubernetes "
                    "namespace, pod=~ the workload's pods, container!=\"\", "
                    "container!=\"POD\"",
    )
    queue_api: QueueApiOptions | None = Field(
        None,
        description="community edition: read the queue depth from Stalwart's management API "
                    "(GET /api/queue/messages) and add the queue_trend policy on it",
    )
    memory: bool = Field(
        False,
        description="add the memory threshold on cAdvisor's working set as % of the "
                    "container's memory limit (memory_query replaces the query)",
    )

    @field_validator("selector", "container_selector")
    @classmethod
    def _matchers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(SELECTOR_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a list of PromQL label matchers such as "
                'service="smtp" or namespace="mail",pod=~"smtp-.*" (no braces)')
        return value.strip(" \t\r\n,")  # what _EDGE allows at either end, all of it


@dataclass(frozen=True)
class Scope:
    """Which series are this target's: matchers for Stalwart's per-node metrics and for the
    workload's cAdvisor series ("" = every scraped node / container)."""

    selector: str
    container_selector: str
    backend: str = "swarm"

    def stalwart(self, prefix: str, metric: str) -> str:
        """A per-node Stalwart metric selector, scoped to the target's nodes."""
        return f"{prefix}{metric}{{{self.selector}}}" if self.selector else f"{prefix}{metric}"

    def container(self, metric: str, extra: str = "") -> str:
        """A cAdvisor series selector, scoped to the target's containers."""
        matchers = ",".join(m for m in (self.container_selector, extra) if m)
        return f"{metric}{{{matchers}}}" if matchers else metric


UNSCOPED = Scope("", "")


def pod_pattern(kind: str, name: str) -> str:
    """The names of a workload's pods: `<name>-<hash>-<5>` (Deployment), `<name>-<n>`
    (StatefulSet), `<name>-...` for any other kind."""
    escaped = name.replace(".", "\\\\.")  # Kubernetes names: [a-z0-9.-]; "." is a regex
    if kind == "deployment":
        return f"{escaped}-[a-z0-9]+-[a-z0-9]{{5}}"
    if kind == "statefulset":
        return f"{escaped}-[0-9]+"
    return f"{escaped}-.+"


def default_scope(backend: str, workload: str, namespace: str | None,
                  kind: str = "deployment") -> Scope:
    """The selectors the shipped Prometheus examples (deploy/prometheus/) give labels for:
    Swarm `service` relabeled from `__meta_dockerswarm_service_name`, Kubernetes pod
    discovery's `namespace` and `pod`; cAdvisor's own container labels."""
    if backend == "kubernetes":
        pods = f'namespace="{namespace}",pod=~"{pod_pattern(kind, workload)}"'
        return Scope(pods, f'{pods},container!="",container!="POD"', backend)
    return Scope(f'service="{workload}"',
                 f'container_label_com_docker_swarm_service_name="{workload}"', backend)


def effective_scope(options: PresetOptions, *, backend: str, workload: str,
                    namespace: str | None, kind: str = "deployment") -> Scope:
    """The target's scope: `preset_options.selector`/`container_selector`, else defaults."""
    default = default_scope(backend, workload, namespace, kind)
    return Scope(
        default.selector if options.selector is None else options.selector,
        default.container_selector if options.container_selector is None
        else options.container_selector,
        backend,
    )


def while_scraped(prefix: str, expr: str, scope: Scope = UNSCOPED) -> str:
    """`expr` only while Prometheus scrapes some Stalwart node of the target, else no series.

    `or vector(0)` turns an absent counter into 0, which is the truth only while the node is
    scraped (a counter is absent until its first event). When no node is scraped (Stalwart's
    endpoint down, auth changed, a relabeling mistake), 0 would read as an idle cluster and
    scale it to min_replicas; gated on `smtp_active_connections`, which every node always
    exports and which goes stale on the first failed scrape, the signal is `empty` instead
    and the size holds. It also cuts the fall of a 5-minute rate() over the window after
    the scrapes stop, which would otherwise look like demand fading.
    """
    return f"({expr}) and on() count({scope.stalwart(prefix, 'smtp_active_connections')})"


def counter_rate(prefix: str, metric: str, window: str = "5m", scope: Scope = UNSCOPED) -> str:
    """Per-second rate of a Stalwart counter over the target's nodes, 0 while absent."""
    return f"(sum(rate({scope.stalwart(prefix, metric)}[{window}])) or vector(0))"


def inflow_per_hour(prefix: str, window: str = "5m", scope: Scope = UNSCOPED) -> str:
    """Messages queued per hour: inbound plus authenticated submissions."""
    return while_scraped(prefix, (
        f"({counter_rate(prefix, 'queue_queue_message', window, scope)} + "
        f"{counter_rate(prefix, 'queue_queue_message_authenticated', window, scope)}) * 3600"
    ), scope)


def net_inflow_per_hour(prefix: str, scope: Scope = UNSCOPED) -> str:
    """Queue growth per hour on the community edition: inflow minus completed deliveries."""
    return while_scraped(prefix, (
        f"({counter_rate(prefix, 'queue_queue_message', scope=scope)} + "
        f"{counter_rate(prefix, 'queue_queue_message_authenticated', scope=scope)} - "
        f"{counter_rate(prefix, 'delivery_completed', scope=scope)}) * 3600"
    ), scope)


def cpu_percent_of_limit(scope: Scope) -> str:
    """cAdvisor CPU use per container as % of its CPU LIMIT (quota / period), else of its
    REQUEST (Kubernetes: shares / 1024; a pod without a request has 2 shares), else of one
    core — averaged over the target's containers.

    A 4-core container at 25 % of its limit reads 25, not 100. Swarm reservations never reach
    cAdvisor (Docker leaves the shares at 1024 for them), so on Swarm only a limit
    (`resources.limits.cpus`) counts; `cpu_per_core_query` tells `explain` when a container
    is read per core.
    """
    usage = f"rate({scope.container('container_cpu_usage_seconds_total')}[1m])"
    limit = (f"(({scope.container('container_spec_cpu_quota')} > 0) / on(id) "
             f"{scope.container('container_spec_cpu_period')})")
    # group_left keeps each container's own labels (a one-to-one `on` keeps only `id`), so
    # `or` sees the same label set in every branch and adds a container once.
    parts = [f"{usage} / on(id) group_left() {limit}"]
    if scope.backend == "kubernetes":
        parts.append(f"{usage} / on(id) group_left() "
                     f"(({scope.container('container_spec_cpu_shares')} > 2) / 1024)")
    parts.append(usage)
    return f"avg({' or '.join(parts)}) * 100"


def cpu_per_core_query(scope: Scope) -> str:
    """How many of the target's containers have neither a CPU limit nor (Kubernetes) a
    request: their CPU reads as % of ONE core (0 when none)."""
    cpu = scope.container("container_cpu_usage_seconds_total")
    expr = f"{cpu} unless on(id) ({scope.container('container_spec_cpu_quota')} > 0)"
    if scope.backend == "kubernetes":
        expr += f" unless on(id) ({scope.container('container_spec_cpu_shares')} > 2)"
    return f"count({expr}) or vector(0)"


def memory_percent_of_limit(scope: Scope) -> str:
    """cAdvisor working set as % of the container's memory limit (0 = no limit: left out)."""
    working = scope.container("container_memory_working_set_bytes")
    limit = scope.container("container_spec_memory_limit_bytes")
    return f"avg({working} / on(id) group_left() ({limit} > 0)) * 100"


def default_cpu_query(backend: str, workload: str, namespace: str | None,
                      kind: str = "deployment") -> str:
    """The CPU % of the workload's containers relative to their limit (see above)."""
    return cpu_percent_of_limit(default_scope(backend, workload, namespace, kind))


def _resource_policies(opts: PresetOptions, scope: Scope,
                       cpu_default: float) -> list[dict[str, Any]]:
    above = opts.cpu_scale_up_above if opts.cpu_scale_up_above is not None else cpu_default
    policies: list[dict[str, Any]] = [
        {"type": "threshold", "name": "cpu",
         "query": opts.cpu_query or cpu_percent_of_limit(scope), "simulate_as": "cpu",
         "scale_up_above": above, "for": "1m"},
    ]
    if opts.memory_query or opts.memory:
        policies.append(
            {"type": "threshold", "name": "memory",
             "query": opts.memory_query or memory_percent_of_limit(scope),
             "simulate_as": "memory", "scale_up_above": opts.memory_scale_up_above, "for": "2m"}
        )
    return policies


def _mail_flow_policies(opts: PresetOptions, prefix: str,
                        scope: Scope) -> list[dict[str, Any]]:
    # The inflow over 1m (not 5m: that window alone made sizing trail demand by minutes),
    # its trend fitted over 2m and extrapolated `lead` ahead (bench/quality.py measures it).
    policies: list[dict[str, Any]] = [
        {"type": "forecast", "name": "inflow", "query": inflow_per_hour(prefix, "1m", scope),
         "simulate_as": "arrival_rate_1m", "per_instance": opts.per_instance,
         "headroom": opts.headroom, "hysteresis": opts.hysteresis, "window": "2m",
         "lead": opts.lead},
    ]
    if opts.edition == "community" and opts.queue_api is not None:
        # The community edition's only true depth: the management API's count of the whole
        # shared queue (cluster-wide, like queue_count), at most one call per `every`.
        policies.append(
            {"type": "queue_trend", "name": "queue", "query": opts.queue_api.query(),
             "simulate_as": "queue", "per_instance": opts.per_instance,
             "drain_within": opts.drain_within}
        )
    if opts.edition == "enterprise":
        # Cluster-wide: set by the metrics.calculate nodes for the whole shared queue, so
        # NOT scoped to this target's nodes (which should not hold that role).
        policies.append(
            {"type": "queue_trend", "name": "queue", "query": f"max({prefix}queue_count)",
             "simulate_as": "queue", "per_instance": opts.per_instance,
             "drain_within": opts.drain_within}
        )
    # Community edition: no queue policy. Its only stand-in for depth is net inflow from two
    # 5m rates averaged over 5m, which kept reading "growing" for minutes after capacity had
    # caught up and added instances a burst no longer needed; a saturated cluster is caught
    # by the CPU backstop instead. `net_inflow_per_hour` stays for explicit policies.
    return policies


def _seasonal_policy(name: str, query: str, per_instance: float, opts: PresetOptions,
                     simulate_as: str | None = None) -> list[dict[str, Any]]:
    """`seasonal` on a preset's sizing signal: a recurring burst the history shows is met
    ready (the reactive policies pay start-up + lag at each one); no opinion otherwise."""
    if opts.seasonal == "off":
        return []
    policy: dict[str, Any] = {
        "type": "seasonal", "name": name, "query": query, "per_instance": per_instance,
        "headroom": opts.headroom, "lead": opts.seasonal_lead, "mode": opts.seasonal}
    if simulate_as is not None:
        policy["simulate_as"] = simulate_as
    return [policy]


def _inflow_seasonal(opts: PresetOptions, prefix: str, scope: Scope) -> list[dict[str, Any]]:
    return _seasonal_policy("inflow_seasonal", inflow_per_hour(prefix, "1m", scope),
                            opts.per_instance, opts, "arrival_rate_1m")


def _sessions_seasonal(protocol: str, opts: PresetOptions, prefix: str,
                       scope: Scope) -> list[dict[str, Any]]:
    # The sessions of the whole target (the sessions policy reads their average per node):
    # sized per `connections_per_instance` like it.
    query = f"sum({scope.stalwart(prefix, f'{protocol}_active_connections')})"
    return _seasonal_policy(f"{protocol}_sessions_seasonal", query,
                            opts.connections_per_instance, opts)


def _sessions_policy(protocol: str, opts: PresetOptions, prefix: str,
                     scope: Scope) -> dict[str, Any]:
    return {
        "type": "target_value", "name": f"{protocol}_sessions",
        "query": f"avg({scope.stalwart(prefix, f'{protocol}_active_connections')})",
        "target": opts.connections_per_instance,
    }


def preset_policies(
    preset: str, *, prefix: str, backend: str, workload: str, namespace: str | None,
    options: PresetOptions, kind: str = "deployment",
) -> list[dict[str, Any]]:
    """The policy specs a preset stands for, before validation."""
    scope = effective_scope(options, backend=backend, workload=workload, namespace=namespace,
                            kind=kind)
    if preset == "stalwart-smtp":
        return [*_mail_flow_policies(options, prefix, scope),
                *_resource_policies(options, scope, SMTP_CPU_BACKSTOP),
                *_inflow_seasonal(options, prefix, scope)]
    resources = _resource_policies(options, scope, GUIDE_CPU)
    if preset == "stalwart-imap":
        return [_sessions_policy("imap", options, prefix, scope), *resources,
                *_sessions_seasonal("imap", options, prefix, scope)]
    if preset == "stalwart-http":
        return [_sessions_policy("http", options, prefix, scope), *resources,
                *_sessions_seasonal("http", options, prefix, scope)]
    if preset == "stalwart-all":
        return [*_mail_flow_policies(options, prefix, scope),
                _sessions_policy("imap", options, prefix, scope),
                *_resource_policies(options, scope, SMTP_CPU_BACKSTOP),
                *_inflow_seasonal(options, prefix, scope),
                *_sessions_seasonal("imap", options, prefix, scope)]
    raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESET_NAMES)}")


def preset_guards(preset: str, *, prefix: str, options: PresetOptions,
                  scope: Scope = UNSCOPED) -> list[dict[str, Any]]:
    """Scale-down vetoes a preset adds: never cut nodes with deliveries in flight."""
    if preset in ("stalwart-smtp", "stalwart-all"):
        deliveries = scope.stalwart(prefix, "delivery_active_connections")
        return [
            {"name": "active_deliveries",
             # Per node of THIS target: removing one drops the deliveries it has in flight
             # (idle nodes of another service would dilute the average).
             "query": while_scraped(prefix, f"avg({deliveries}) or vector(0)", scope),
             "block": "scale_down", "above": options.max_active_deliveries,
             "simulate_as": "active_deliveries"},
        ]
    return []
