"""`plan`: the guide's Scaling Decision Matrix, its formula, and the facts it adds."""

from __future__ import annotations

import json

import pytest

from autoscaler.plan import MATRIX, Plan, make_plan

PG_S3_REDIS = "PostgreSQL + S3 + Redis"
SHARDED = "PostgreSQL (sharded, e.g. by user range) + S3 + Redis"


def test_contract_example() -> None:
    plan = make_plan(60_000, 50_000)
    assert plan.instances == 8
    assert plan.architecture == "horizontal"
    assert plan.storage == PG_S3_REDIS
    assert not plan.peak_estimated
    assert plan.formula.endswith("= 8")


# Every row of the matrix, and both sides of each boundary. A peak of 0 isolates the row's
# own lower bound from the formula.
@pytest.mark.parametrize(
    ("users", "row", "architecture", "storage", "instances", "cluster"),
    [
        pytest.param(1, "<1K", "single server", "RocksDB", 1, "no", id="1"),
        pytest.param(999, "<1K", "single server", "RocksDB", 1, "no", id="999"),
        pytest.param(1_000, "1K-5K", "single server", "RocksDB or PostgreSQL", 1, "no",
                     id="1000"),
        pytest.param(4_999, "1K-5K", "single server", "RocksDB or PostgreSQL", 1, "no",
                     id="4999"),
        pytest.param(5_000, "5K-10K", "single server", "PostgreSQL + S3", 1, "optional",
                     id="5000"),
        pytest.param(9_999, "5K-10K", "single server", "PostgreSQL + S3", 1, "optional",
                     id="9999"),
        pytest.param(10_000, "10K-50K", "horizontal", PG_S3_REDIS, 3, "yes", id="10000"),
        pytest.param(49_999, "10K-50K", "horizontal", PG_S3_REDIS, 3, "yes", id="49999"),
        pytest.param(50_000, "50K-100K", "horizontal", PG_S3_REDIS, 5, "yes", id="50000"),
        pytest.param(99_999, "50K-100K", "horizontal", PG_S3_REDIS, 5, "yes", id="99999"),
        pytest.param(100_000, "100K+", "horizontal", SHARDED, 10, "yes", id="100000"),
        pytest.param(10_000_000, "100K+", "horizontal", SHARDED, 10, "yes", id="10M"),
    ],
)
def test_matrix_rows(users: int, row: str, architecture: str, storage: str, instances: int,
                     cluster: str) -> None:
    plan = make_plan(users, 0)
    assert (plan.row, plan.architecture, plan.storage, plan.instances, plan.cluster) == (
        row, architecture, storage, instances, cluster)


@pytest.mark.parametrize(
    ("users", "peak", "instances"),
    [
        # The two cases: the old 50,000-users-per-node rule gave 3 for both.
        pytest.param(60_000, 10_000, 5, id="60k-at-10k-row-bound"),
        pytest.param(150_000, 20_000, 10, id="150k-at-20k-row-bound"),
        # Each clustered row's bound, and the formula on either side of it.
        pytest.param(20_000, 13_333, 3, id="10k-50k-formula-2"),
        pytest.param(20_000, 20_000, 3, id="10k-50k-formula-3"),
        pytest.param(20_000, 20_001, 4, id="10k-50k-formula-4"),
        pytest.param(75_000, 26_666, 5, id="50k-100k-formula-4"),
        pytest.param(75_000, 33_334, 6, id="50k-100k-formula-6"),
        pytest.param(500_000, 60_000, 10, id="100k+-formula-9"),
        pytest.param(500_000, 66_667, 11, id="100k+-formula-11"),
        pytest.param(60_000, 200_000, 30, id="formula-far-above-row"),
    ],
)
def test_instances_are_the_row_bound_or_the_formula(users: int, peak: int,
                                                    instances: int) -> None:
    assert make_plan(users, peak).instances == instances


@pytest.mark.parametrize(
    ("users", "peak", "instances"),
    [
        pytest.param(500, 6_666, 1, id="formula-exactly-1-stays-single"),
    ],
)
def test_single_server_when_the_formula_says_one(users: int, peak: int, instances: int) -> None:
    plan = make_plan(users, peak)
    assert (plan.architecture, plan.instances) == ("single server", instances)
    assert plan.protocol_separation is None and plan.shared_services == ()


@pytest.mark.parametrize(
    ("users", "peak", "instances"),
    [
        pytest.param(500, 6_667, 3, id="formula-2-lifts-to-the-10k-row-bound"),
        pytest.param(9_999, 50_000, 8, id="heavy-load-on-a-5k-10k-row"),
    ],
)
def test_load_promotes_single_server_to_the_first_cluster_row(users: int, peak: int,
                                                              instances: int) -> None:
    plan = make_plan(users, peak)
    assert (plan.row, plan.architecture, plan.storage) == ("10K-50K", "horizontal",
                                                            PG_S3_REDIS)
    assert plan.instances == instances
    assert any("calls for a cluster" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("users", "hardware", "coordinator"),
    [
        pytest.param(999, "2-4 cores, 4-8 GB RAM, 100 GB SSD", "none", id="<1K"),
        pytest.param(1_000, "4-8 cores, 8-16 GB RAM, 500 GB NVMe", "none", id="1K-5K"),
        pytest.param(5_000, "8-16 cores, 16-32 GB RAM, 1-2 TB NVMe", "NATS", id="5K-10K"),
        pytest.param(10_000, "requests 1 CPU / 2 GiB, limits 2 CPU / 4 GiB", "Kafka/Redpanda",
                     id="10K-50K"),
        pytest.param(100_000, "requests 1 CPU / 2 GiB, limits 2 CPU / 4 GiB", "Kafka/Redpanda",
                     id="100K+"),
    ],
)
def test_hardware_and_coordinator_by_size(users: int, hardware: str, coordinator: str) -> None:
    plan = make_plan(users, 0)
    assert hardware in plan.hardware
    assert plan.coordinator.startswith(coordinator)


def test_a_cluster_names_its_shared_services_and_protocol_separation() -> None:
    plan = make_plan(60_000, 50_000)
    assert any("RocksDB will not work" in s for s in plan.shared_services)
    assert any("S3" in s for s in plan.shared_services)
    assert any("Redis Sentinel" in s for s in plan.shared_services)
    assert plan.protocol_separation is not None
    assert "SMTP 3, IMAP 3, HTTP 2" in plan.protocol_separation


def test_matrix_ascends_from_one_user() -> None:
    starts = [row.min_users for row in MATRIX]
    assert starts == sorted(starts) and starts[0] == 1
    bounds = [row.lower_bound for row in MATRIX]
    assert bounds == sorted(bounds)


@pytest.mark.parametrize(
    ("users", "peak", "fragment"),
    [
        pytest.param(1_000_001, 0, "FoundationDB", id="foundationdb"),
        pytest.param(30_000_000, 10_000_000, "511", id="node-id-range"),
        pytest.param(500, 0, "CPU stays above 70 %", id="when-to-scale"),
    ],
)
def test_notes(users: int, peak: int, fragment: str) -> None:
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
    assert {"architecture", "storage", "cluster", "formula", "notes", "coordinator",
            "hardware", "shared_services", "protocol_separation"} <= set(decoded)
    assert isinstance(decoded["notes"], list)
    rebuilt = Plan(**{**decoded, "notes": tuple(decoded["notes"]),
                      "shared_services": tuple(decoded["shared_services"])})
    assert rebuilt == make_plan(60_000, 50_000)
