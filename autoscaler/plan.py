"""`autoscaler plan`: a first deployment shape for N users, before any metric exists.

Pure: the CLI prints the result. It follows the sizing guide's Scaling Decision Matrix as
written (DESIGN.md, `plan` contract): the row for the number of users gives the architecture,
storage, cluster need and the fewest instances; the guide's formula `ceil(peak / 10,000 x 1.5)`
(the same one the `capacity` policy applies to live rates, so the plan and the autoscaler agree
on day one) can only raise that. The guide's other facts (hardware per size, the cluster
coordinator by scale, what horizontal scaling needs, separation by protocol) go into the output.
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
EMAILS_PER_USER_HOUR = 0.8
"""Assumed peak emails/hour per user when no peak is given (a round, stated guess)."""
MAX_NODE_ID = 511
"""`cluster.node-id` must be unique in 1-511 (Snowflake ids keep 9 bits of it)."""
FOUNDATIONDB_USERS = 1_000_000
"""Above this many users, FoundationDB is worth considering as the data store."""

SINGLE = "single server"
HORIZONTAL = "horizontal"
NO_COORDINATOR = "none (a single server coordinates with itself)"
NATS = "NATS (medium scale, 1K-10K users, low latency), if you cluster"
KAFKA = ("Kafka/Redpanda (large scale, 10K+ users, strong consistency; needs a custom "
         "Stalwart build); Redis for a small-medium cluster already using Redis")
NODE_HARDWARE = ("per node, as the guide's Kubernetes example: requests 1 CPU / 2 GiB, "
                 "limits 2 CPU / 4 GiB")
SHARED_SERVICES: tuple[str, ...] = (
    "a shared database: PostgreSQL or MySQL (RocksDB will not work)",
    "shared blob storage: S3, MinIO or Azure",
    "a shared cache: Redis Sentinel or Redis Cluster",
)
PROTOCOL_SEPARATION = (
    "run SMTP, IMAP and HTTP as separate services so each scales on its own (the guide's "
    "example: SMTP 3, IMAP 3, HTTP 2 nodes); the instance count sizes the mail flow, i.e. "
    "the SMTP service; one autoscaler target per service (presets stalwart-smtp, "
    "stalwart-imap, stalwart-http)"
)
WHEN_TO_SCALE = ("Scale out when CPU stays above 70 %, memory above 80 %, the queue keeps "
                 "growing, or response time exceeds the SLA (what the presets watch).")


@dataclass(frozen=True)
class Row:
    """One row of the Scaling Decision Matrix: users in [min_users, next row's min_users)."""

    label: str
    min_users: int
    architecture: str
    storage: str
    instances: str
    """The matrix's instance column as written ("3-5", "10+")."""
    lower_bound: int
    """The fewest instances of the row: the plan never goes below it."""
    cluster: str
    coordinator: str
    hardware: str


MATRIX: tuple[Row, ...] = (
    Row("<1K", 1, SINGLE, "RocksDB", "1", 1, "no", NO_COORDINATOR,
        "2-4 cores, 4-8 GB RAM, 100 GB SSD"),
    Row("1K-5K", 1_000, SINGLE, "RocksDB or PostgreSQL", "1", 1, "no", NO_COORDINATOR,
        "4-8 cores, 8-16 GB RAM, 500 GB NVMe"),
    Row("5K-10K", 5_000, SINGLE, "PostgreSQL + S3", "1", 1, "optional", NATS,
        "8-16 cores, 16-32 GB RAM, 1-2 TB NVMe"),
    Row("10K-50K", 10_000, HORIZONTAL, "PostgreSQL + S3 + Redis", "3-5", 3, "yes", KAFKA,
        NODE_HARDWARE),
    Row("50K-100K", 50_000, HORIZONTAL, "PostgreSQL + S3 + Redis", "5-10", 5, "yes", KAFKA,
        NODE_HARDWARE),
    Row("100K+", 100_000, HORIZONTAL,
        "PostgreSQL (sharded, e.g. by user range) + S3 + Redis", "10+", 10, "yes", KAFKA,
        NODE_HARDWARE),
)
"""The guide's Scaling Decision Matrix, ascending by `min_users`."""
FIRST_CLUSTER_ROW = next(row for row in MATRIX if row.architecture == HORIZONTAL)


@dataclass(frozen=True)
class Plan:
    """What to deploy for `users`, and why (`formula`, `notes`)."""

    users: int
    peak_emails_per_hour: int
    peak_estimated: bool
    row: str
    architecture: str
    storage: str
    cluster: str
    instances: int
    matrix_instances: str
    coordinator: str
    hardware: str
    shared_services: tuple[str, ...]
    protocol_separation: str | None
    formula: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists)."""
        data = asdict(self)
        data["shared_services"] = list(self.shared_services)
        data["notes"] = list(self.notes)
        return data


def row_for(users: int) -> Row:
    """The decision-matrix row for a number of users (each row includes its lower edge)."""
    return [row for row in MATRIX if row.min_users <= users][-1]


def make_plan(users: int, peak_emails_per_hour: int | None = None) -> Plan:
    """The matrix row for `users`, its instance count raised by the formula at the peak."""
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
        f"formula: ceil({peak:,}/h / {PER_INSTANCE:,.0f} per instance x {HEADROOM:g}) = {by_load}"
    )
    row = row_for(users)
    if row.architecture == SINGLE and by_load > 1:
        notes.append(
            f"The load calls for a cluster: {by_load} instances for {peak:,} emails/hour, so "
            f"the plan uses the matrix's {FIRST_CLUSTER_ROW.label} row instead of a "
            f"{row.architecture} for {users:,} users."
        )
        row = FIRST_CLUSTER_ROW
    instances = max(row.lower_bound, by_load)
    steps.append(f"instances = max(row {row.label} lower bound {row.lower_bound}, {by_load}) "
                 f"= {instances}")
    clustered = row.architecture == HORIZONTAL
    if clustered:
        notes.extend(_cluster_notes(users, instances))
    notes.append(WHEN_TO_SCALE)

    return Plan(
        users=users,
        peak_emails_per_hour=peak,
        peak_estimated=estimated,
        row=row.label,
        architecture=row.architecture,
        storage=row.storage,
        cluster=row.cluster,
        instances=instances,
        matrix_instances=row.instances,
        coordinator=row.coordinator,
        hardware=row.hardware,
        shared_services=SHARED_SERVICES if clustered else (),
        protocol_separation=PROTOCOL_SEPARATION if clustered else None,
        formula="; ".join(steps),
        notes=tuple(notes),
    )


def _cluster_notes(users: int, instances: int) -> list[str]:
    """The cluster facts an operator needs on day one."""
    notes = [
        "Give each node a unique cluster.node-id in 1-511 and pin roles (cluster.roles.*) to "
        "fixed core node ids; autoscaled replicas should run no roles.",
    ]
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
