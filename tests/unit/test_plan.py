"""`plan`: the decision matrix, the guide's formula and the floors under it."""

from __future__ import annotations

import json

import pytest

from autoscaler.plan import TIERS, Plan, make_plan

RAW_DATA = "RocksDB (embedded: data, blobs, search)"
PG_LOCAL = "PostgreSQL + local or S3 blob store"
PG_CLUSTER = "PostgreSQL + S3 + Redis"


def test_contract_example() -> None:
    plan = make_plan(60_000, 50_000)
    assert plan.instances == 8
    assert plan.architecture == "horizontal cluster"
    assert plan.storage == PG_CLUSTER
    assert not plan.peak_estimated
    assert "= 8" in plan.formula


@pytest.mark.parametrize(
    ("users", "architecture", "storage", "cluster_starts"),
    [
        pytest.param(1, "single node", RAW_DATA, "none", id="1"),
        pytest.param(999, "single node", RAW_DATA, "none", id="999"),
        pytest.param(1_000, "single node", PG_LOCAL, "none (add a standby", id="1000"),
        pytest.param(9_999, "single node", PG_LOCAL, "none (add a standby", id="9999"),
        pytest.param(10_000, "small cluster", PG_CLUSTER, "3+ nodes", id="10000"),
        pytest.param(49_999, "small cluster", PG_CLUSTER, "3+ nodes", id="49999"),
        pytest.param(50_000, "horizontal cluster", PG_CLUSTER, "N nodes", id="50000"),
    ],
)
def test_tier_boundaries(users: int, architecture: str, storage: str, cluster_starts: str) -> None:
    # A peak of 0 isolates the tier choice from the load rule.
    plan = make_plan(users, 0)
    assert (plan.architecture, plan.storage) == (architecture, storage)
    assert plan.cluster.startswith(cluster_starts)


def test_tiers_ascend() -> None:
    starts = [tier.min_users for tier in TIERS]
    assert starts == sorted(starts) and starts[0] == 1


@pytest.mark.parametrize(
    ("users", "peak", "instances", "architecture"),
    [
        pytest.param(500, 0, 1, "single node", id="single-idle"),
        pytest.param(5_000, 6_666, 1, "single node", id="single-formula-exactly-1"),
        pytest.param(10_000, 0, 3, "small cluster", id="ha-min-idle-cluster"),
        pytest.param(20_000, 10_000, 3, "small cluster", id="ha-min-over-formula-2"),
        pytest.param(49_999, 30_000, 5, "small cluster", id="formula-over-ha-min"),
        pytest.param(200_000, 0, 4, "horizontal cluster", id="users-per-node-exact"),
        pytest.param(200_001, 10_000, 5, "horizontal cluster", id="users-per-node-rounds-up"),
        pytest.param(1_000_000, 50_000, 20, "horizontal cluster", id="users-per-node-beats-load"),
        pytest.param(60_000, 200_000, 30, "horizontal cluster", id="load-beats-users"),
    ],
)
def test_instances(users: int, peak: int, instances: int, architecture: str) -> None:
    plan = make_plan(users, peak)
    assert (plan.instances, plan.architecture) == (instances, architecture)


@pytest.mark.parametrize(
    ("users", "peak", "instances"),
    [
        pytest.param(500, 6_667, 3, id="formula-2-lifts-to-ha-min"),
        pytest.param(9_999, 50_000, 8, id="heavy-load-small-tier"),
    ],
)
def test_load_promotes_single_node_to_cluster(users: int, peak: int, instances: int) -> None:
    plan = make_plan(users, peak)
    assert plan.architecture == "small cluster"
    assert plan.storage == PG_CLUSTER
    assert plan.instances == instances
    assert any("calls for a cluster" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("users", "peak", "fragment"),
    [
        pytest.param(10_000, 0, "high-availability minimum", id="ha-minimum"),
        pytest.param(1_000_000, 50_000, "50,000 mailboxes per node", id="users-per-node"),
        pytest.param(1_000_001, 0, "FoundationDB", id="foundationdb"),
        pytest.param(30_000_000, 0, "511", id="node-id-range"),
    ],
)
def test_notes_explain_the_binding_rule(users: int, peak: int, fragment: str) -> None:
    assert any(fragment in note for note in make_plan(users, peak).notes)


@pytest.mark.parametrize(
    ("users", "peak"),
    [
        pytest.param(1_000_000, 0, id="at-1m"),
        pytest.param(60_000, 50_000, id="60k"),
        pytest.param(500, 0, id="single"),
    ],
)
def test_no_foundationdb_note_up_to_a_million(users: int, peak: int) -> None:
    assert not any("FoundationDB" in note for note in make_plan(users, peak).notes)


@pytest.mark.parametrize(
    ("users", "peak", "instances"),
    [
        pytest.param(60_000, 48_000, 8, id="60k-users"),
        pytest.param(999, 800, 1, id="999-users-rounds-up"),
        pytest.param(12_500, 10_000, 3, id="12.5k-users"),
    ],
)
def test_estimated_peak(users: int, peak: int, instances: int) -> None:
    plan = make_plan(users)
    assert plan.peak_estimated
    assert plan.peak_emails_per_hour == peak
    assert plan.instances == instances
    assert "0.8" in plan.formula and "assumed" in plan.formula
    assert any("0.8 emails/hour per user" in note for note in plan.notes)


def test_given_peak_has_no_assumption_note() -> None:
    plan = make_plan(60_000, 50_000)
    assert not any("assumed" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("users", "peak", "fragment"),
    [
        pytest.param(0, None, "users", id="zero-users"),
        pytest.param(-5, 100, "users", id="negative-users"),
        pytest.param(True, None, "users", id="bool-users"),
        pytest.param(10.5, None, "users", id="float-users"),
        pytest.param(100, -1, "peak", id="negative-peak"),
        pytest.param(100, 1.5, "peak", id="float-peak"),
    ],
)
def test_invalid_inputs(users: object, peak: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_plan(users, peak)  # type: ignore[arg-type]


def test_to_dict_is_json_ready() -> None:
    data = make_plan(60_000, 50_000).to_dict()
    decoded = json.loads(json.dumps(data))
    assert decoded["instances"] == 8
    assert {"architecture", "storage", "cluster", "formula", "notes"} <= set(decoded)
    assert isinstance(decoded["notes"], list)
    assert Plan(**{**decoded, "notes": tuple(decoded["notes"])}) == make_plan(60_000, 50_000)
