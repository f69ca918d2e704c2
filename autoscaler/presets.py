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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.units import Duration

PRESET_NAMES = ("stalwart-smtp", "stalwart-imap", "stalwart-http", "stalwart-all")
Preset = Literal["stalwart-smtp", "stalwart-imap", "stalwart-http", "stalwart-all"]


GUIDE_CPU = 70.0  # the guide's rule: more instances above 70 % CPU
# SMTP is sized by the inflow forecast with a small headroom, so ~90 % busy is its normal
# state; a 70 % CPU rule would add an instance the forecast takes back (flapping). CPU stays
# as the backstop for a wrong `per_instance`: a saturated node (95 % in the plant) trips it.
SMTP_CPU_BACKSTOP = 90.0


class PresetOptions(BaseModel):
    """Knobs of the presets; every one has a default that suits a typical cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edition: Literal["community", "enterprise"] = Field(
        "community", description="enterprise exports queue_count; community uses net inflow"
    )
    cpu_query: str | None = Field(
        None, description="average CPU % per instance; default: cAdvisor for the workload"
    )
    memory_query: str | None = Field(
        None, description="average memory % of limit per instance; default: none"
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
    max_active_deliveries: float = Field(
        20.0, ge=0,
        description="no scale-down while a node has more outbound deliveries in flight "
                    "(average per node)",
    )
    connections_per_instance: float = Field(
        2000.0, gt=0, description="IMAP/HTTP sessions one instance should hold"
    )


def while_scraped(prefix: str, expr: str) -> str:
    """`expr` only while Prometheus scrapes some Stalwart node, else no series at all.

    `or vector(0)` turns an absent counter into 0, which is the truth only while the node is
    scraped (a counter is absent until its first event). When no node is scraped (Stalwart's
    endpoint down, auth changed, a relabeling mistake), 0 would read as an idle cluster and
    scale it to min_replicas; gated on `smtp_active_connections`, which every node always
    exports and which goes stale on the first failed scrape, the signal is `empty` instead
    and the size holds. It also cuts the fall of a 5-minute rate() over the window after
    the scrapes stop, which would otherwise look like demand fading.
    """
    return f"({expr}) and on() count({prefix}smtp_active_connections)"


def counter_rate(prefix: str, metric: str, window: str = "5m") -> str:
    """Cluster-wide per-second rate of a Stalwart counter, 0 while the series is absent."""
    return f"(sum(rate({prefix}{metric}[{window}])) or vector(0))"


def inflow_per_hour(prefix: str, window: str = "5m") -> str:
    """Messages queued per hour: inbound plus authenticated submissions."""
    return while_scraped(prefix, (
        f"({counter_rate(prefix, 'queue_queue_message', window)} + "
        f"{counter_rate(prefix, 'queue_queue_message_authenticated', window)}) * 3600"
    ))


def net_inflow_per_hour(prefix: str) -> str:
    """Queue growth per hour on the community edition: inflow minus completed deliveries."""
    return while_scraped(prefix, (
        f"({counter_rate(prefix, 'queue_queue_message')} + "
        f"{counter_rate(prefix, 'queue_queue_message_authenticated')} - "
        f"{counter_rate(prefix, 'delivery_completed')}) * 3600"
    ))


def default_cpu_query(backend: str, workload: str, namespace: str | None) -> str:
    """cAdvisor's CPU use as % of one core, averaged over the workload's containers."""
    if backend == "kubernetes":
        selector = f'namespace="{namespace}",pod=~"{workload}-.*",container!=""'
    else:
        selector = f'container_label_com_docker_swarm_service_name="{workload}"'
    return f"avg(rate(container_cpu_usage_seconds_total{{{selector}}}[1m])) * 100"


def _resource_policies(opts: PresetOptions, cpu_query: str,
                       cpu_default: float) -> list[dict[str, Any]]:
    above = opts.cpu_scale_up_above if opts.cpu_scale_up_above is not None else cpu_default
    policies: list[dict[str, Any]] = [
        {"type": "threshold", "name": "cpu", "query": cpu_query, "simulate_as": "cpu",
         "scale_up_above": above, "for": "1m"},
    ]
    if opts.memory_query:
        policies.append(
            {"type": "threshold", "name": "memory", "query": opts.memory_query,
             "simulate_as": "memory", "scale_up_above": opts.memory_scale_up_above, "for": "2m"}
        )
    return policies


def _mail_flow_policies(opts: PresetOptions, prefix: str) -> list[dict[str, Any]]:
    # The inflow over 1m (not 5m: that window alone made sizing trail demand by minutes),
    # its trend fitted over 2m and extrapolated `lead` ahead (bench/quality.py measures it).
    policies: list[dict[str, Any]] = [
        {"type": "forecast", "name": "inflow", "query": inflow_per_hour(prefix, "1m"),
         "simulate_as": "arrival_rate_1m", "per_instance": opts.per_instance,
         "headroom": opts.headroom, "hysteresis": opts.hysteresis, "window": "2m",
         "lead": opts.lead},
    ]
    if opts.edition == "enterprise":
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


def _sessions_policy(protocol: str, opts: PresetOptions, prefix: str) -> dict[str, Any]:
    return {
        "type": "target_value", "name": f"{protocol}_sessions",
        "query": f"avg({prefix}{protocol}_active_connections)",
        "target": opts.connections_per_instance,
    }


def preset_policies(
    preset: str, *, prefix: str, backend: str, workload: str, namespace: str | None,
    options: PresetOptions,
) -> list[dict[str, Any]]:
    """The policy specs a preset stands for, before validation."""
    cpu = options.cpu_query or default_cpu_query(backend, workload, namespace)
    if preset == "stalwart-smtp":
        return [*_mail_flow_policies(options, prefix),
                *_resource_policies(options, cpu, SMTP_CPU_BACKSTOP)]
    resources = _resource_policies(options, cpu, GUIDE_CPU)
    if preset == "stalwart-imap":
        return [_sessions_policy("imap", options, prefix), *resources]
    if preset == "stalwart-http":
        return [_sessions_policy("http", options, prefix), *resources]
    if preset == "stalwart-all":
        return [*_mail_flow_policies(options, prefix), _sessions_policy("imap", options, prefix),
                *_resource_policies(options, cpu, SMTP_CPU_BACKSTOP)]
    raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESET_NAMES)}")


def preset_guards(preset: str, *, prefix: str, options: PresetOptions) -> list[dict[str, Any]]:
    """Scale-down vetoes a preset adds: never cut nodes with deliveries in flight."""
    if preset in ("stalwart-smtp", "stalwart-all"):
        return [
            {"name": "active_deliveries",
             # Per node: removing one node drops the deliveries that node has in flight.
             "query": while_scraped(prefix,
                                    f"avg({prefix}delivery_active_connections) or vector(0)"),
             "block": "scale_down", "above": options.max_active_deliveries,
             "simulate_as": "active_deliveries"},
        ]
    return []
