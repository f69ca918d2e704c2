"""`autoscaler plan`: a first deployment shape for N users, before any metric exists.

Pure: the CLI prints the result. The architecture comes from a small tier table (by users), the
instance count from the sizing guide's formula `ceil(peak / 10,000 x 1.5)`, the same one the
`capacity` policy applies to live rates, so the plan and the autoscaler agree on day one. The
count never goes below STALWART.md section 5's floors: 3 nodes for a highly available cluster
and one node per 50,000 mailboxes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from policies.capacity import replicas_for_rate

PER_INSTANCE = 10_000.0
"""Emails/hour one instance handles (the guide's figure; `simulation.capacity_per_instance`)."""
HEADROOM = 1.5
"""The guide's safety factor over the peak rate."""
HA_MINIMUM = 3
"""Fewest nodes of a highly available cluster (STALWART.md section 5)."""
USERS_PER_NODE = 50_000
"""The sizing doc's upper figure of active mailboxes per node (10k-50k)."""
HEAVY_USERS_PER_NODE: tuple[int, int] = (5_000, 10_000)
"""One node per this many users for heavy use (sizing doc), quoted in the notes."""
EMAILS_PER_USER_HOUR = 0.8
"""Assumed peak emails/hour per user when no peak is given (a round, stated guess)."""
MAX_NODE_ID = 511
"""`cluster.node-id` must be unique in 1-511 (Snowflake ids keep 9 bits of it)."""
FOUNDATIONDB_USERS = 1_000_000
"""Above this many users, FoundationDB is worth considering as the data store."""


@dataclass(frozen=True)
class Tier:
    """One row of the decision matrix: from `min_users` up to the next row's."""

    min_users: int
    architecture: str
    storage: str
    cluster: str
    clustered: bool


SINGLE_SMALL = Tier(1, "single node", "RocksDB (embedded: data, blobs, search)", "none", False)
SINGLE = Tier(
    1_000,
    "single node",
    "PostgreSQL + local or S3 blob store",
    "none (add a standby for HA)",
    False,
)
SMALL_CLUSTER = Tier(
    10_000,
    "small cluster",
    "PostgreSQL + S3 + Redis",
    "3+ nodes, coordinator: Redis or NATS",
    True,
)
HORIZONTAL = Tier(
    50_000,
    "horizontal cluster",
    "PostgreSQL + S3 + Redis",
    "N nodes behind a load balancer, coordinator: Redis or NATS, roles pinned to fixed node ids",
    True,
)
TIERS: tuple[Tier, ...] = (SINGLE_SMALL, SINGLE, SMALL_CLUSTER, HORIZONTAL)
"""The decision matrix, ascending by `min_users`; a plan takes the last row it reaches."""


@dataclass(frozen=True)
class Plan:
    """What to deploy for `users`, and why (`formula`, `notes`)."""

    users: int
    peak_emails_per_hour: int
    peak_estimated: bool
    architecture: str
    storage: str
    cluster: str
    instances: int
    formula: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (`notes` as a list)."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


def tier_for(users: int) -> Tier:
    """The decision-matrix row for a number of users."""
    return [tier for tier in TIERS if tier.min_users <= users][-1]


def make_plan(users: int, peak_emails_per_hour: int | None = None) -> Plan:
    """Architecture, storage, cluster shape and instance count for `users` at a peak rate."""
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ValueError(f"users must be a whole number of at least 1, got {users!r}")
    if peak_emails_per_hour is not None and (
        isinstance(peak_emails_per_hour, bool)
        or not isinstance(peak_emails_per_hour, int)
        or peak_emails_per_hour < 0
    ):
        raise ValueError(
            "peak emails per hour must be a whole number of at least 0, "
            f"got {peak_emails_per_hour!r}"
        )

    notes: list[str] = []
    steps: list[str] = []
    estimated = peak_emails_per_hour is None
    if peak_emails_per_hour is None:
        peak = math.ceil(round(users * EMAILS_PER_USER_HOUR, 6))
        steps.append(f"peak = {users:,} users x {EMAILS_PER_USER_HOUR:g}/h = {peak:,}/h (assumed)")
        notes.append(
            f"No peak given: assumed {EMAILS_PER_USER_HOUR:g} emails/hour per user at peak "
            f"({peak:,}/h); pass --peak-emails-per-hour with a measured figure to size on it."
        )
    else:
        peak = peak_emails_per_hour

    by_load = replicas_for_rate(peak, PER_INSTANCE, HEADROOM)
    steps.append(
        f"load: ceil({peak:,}/h / {PER_INSTANCE:,.0f} per instance x {HEADROOM:g}) = {by_load}"
    )
    tier = tier_for(users)
    if not tier.clustered and by_load > 1:
        notes.append(
            f"The load calls for a cluster: {by_load} instances for {peak:,} emails/hour, so "
            f"the plan uses the {SMALL_CLUSTER.architecture} tier instead of a "
            f"{tier.architecture} for {users:,} users."
        )
        tier = SMALL_CLUSTER

    if tier.clustered:
        by_users = math.ceil(users / USERS_PER_NODE)
        steps.append(f"HA minimum = {HA_MINIMUM}")
        steps.append(f"users: ceil({users:,} / {USERS_PER_NODE:,} per node) = {by_users}")
        instances = max(by_load, HA_MINIMUM, by_users)
        steps.append(f"instances = max({by_load}, {HA_MINIMUM}, {by_users}) = {instances}")
        notes.extend(_cluster_notes(users, instances, by_load, by_users))
    else:
        instances = 1
        steps.append("instances = 1 (single node)")

    return Plan(
        users=users,
        peak_emails_per_hour=peak,
        peak_estimated=estimated,
        architecture=tier.architecture,
        storage=tier.storage,
        cluster=tier.cluster,
        instances=instances,
        formula="; ".join(steps),
        notes=tuple(notes),
    )


def _cluster_notes(users: int, instances: int, by_load: int, by_users: int) -> list[str]:
    """Why the count is what it is, and the cluster facts an operator needs on day one."""
    notes: list[str] = []
    if instances == HA_MINIMUM and by_load < HA_MINIMUM and by_users < HA_MINIMUM:
        notes.append(
            f"{HA_MINIMUM} instances is the high-availability minimum for a cluster; "
            f"the load alone needs {by_load}."
        )
    if by_users > by_load and by_users > HA_MINIMUM:
        notes.append(
            f"{by_users} instances come from the sizing doc's upper figure of "
            f"{USERS_PER_NODE:,} mailboxes per node; the load alone needs {by_load}."
        )
    light, heavy = HEAVY_USERS_PER_NODE
    fewest, most = math.ceil(users / heavy), math.ceil(users / light)
    span = f"{fewest:,}" if fewest == most else f"{fewest:,}-{most:,}"
    notes.append(
        f"For heavy use the sizing doc suggests one node per {light:,}-{heavy:,} users "
        f"({span} node{'s' if most > 1 else ''} for {users:,} users)."
    )
    notes.append(
        "Give each node a unique cluster.node-id in 1-511 and pin roles (cluster.roles.*) to "
        "fixed core node ids; autoscaled replicas should run no roles."
    )
    if instances > MAX_NODE_ID:
        notes.append(
            f"{instances} nodes exceed the {MAX_NODE_ID} distinct cluster.node-id values: split "
            "the users across several clusters."
        )
    if users > FOUNDATIONDB_USERS:
        notes.append(
            f"Above {FOUNDATIONDB_USERS:,} users consider FoundationDB as the data store "
            "(PostgreSQL stays an option; blobs on S3, in-memory store on Redis)."
        )
    return notes
