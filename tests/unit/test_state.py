"""State on the target: encode/decode round trips and what happens to unreadable values."""

from __future__ import annotations

import pytest

from autoscaler.model import TargetState
from autoscaler.state import (
    KEYS,
    KUBERNETES_PREFIX,
    PAUSED,
    SWARM_PREFIX,
    decode_state,
    encode_state,
    merge_states,
    remembered_for,
)

PREFIXES = [pytest.param(SWARM_PREFIX, id="swarm"), pytest.param(KUBERNETES_PREFIX, id="k8s")]

# Times at millisecond precision: that is what the labels keep.
STATES = {
    "empty": TargetState(),
    "scaled up": TargetState(last_scale_time=1_700_000_000.125, last_scale_direction=1,
                             last_written=4),
    "scaled down to zero": TargetState(last_scale_time=12.5, last_scale_direction=-1,
                                       last_written=0),
    "history": TargetState(last_scale_time=1_700_000_100.0, last_scale_direction=1,
                           last_written=5,
                           recommendations=((1_700_000_000.0, 3), (1_700_000_015.5, 5)),
                           events=((1_700_000_015.5, 2), (1_700_000_300.25, -1))),
    "manual scale remembered": TargetState(last_written=3, manual_time=99.999,
                                           manual_direction=-1),
    "manual up, no write yet": TargetState(manual_time=0.0, manual_direction=1),
}


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_round_trip(prefix: str, state: TargetState) -> None:
    labels = encode_state(state, prefix)
    decoded = decode_state(labels, prefix)
    assert decoded.state == state
    assert decoded.problems == ()
    assert decoded.paused is False


@pytest.mark.parametrize("prefix", PREFIXES)
def test_encode_writes_every_key_and_never_paused(prefix: str) -> None:
    labels = encode_state(STATES["history"], prefix)
    assert set(labels) == {prefix + key for key in KEYS}
    assert prefix + PAUSED not in labels
    assert all(isinstance(v, str) for v in labels.values())


def test_encode_keeps_only_the_sign_of_a_direction() -> None:
    labels = encode_state(TargetState(last_scale_direction=3, manual_direction=-2), SWARM_PREFIX)
    assert decode_state(labels, SWARM_PREFIX).state == TargetState(
        last_scale_direction=1, manual_direction=-1)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("labels", [None, {}], ids=["none", "empty"])
def test_no_labels_is_no_state(prefix: str, labels: dict[str, str] | None) -> None:
    assert decode_state(labels, prefix).state == TargetState()


def test_other_prefix_and_other_labels_are_ignored() -> None:
    k8s = encode_state(STATES["history"], KUBERNETES_PREFIX)
    decoded = decode_state({**k8s, "com.docker.stack.namespace": "mail"}, SWARM_PREFIX)
    assert decoded.state == TargetState()
    assert decoded.problems == ()


# key (without prefix), raw value
UNREADABLE = [
    ("last-scale-time", "yesterday"),          # bad float
    ("last-scale-time", "nan"),                # not finite
    ("last-scale-time", "inf"),
    ("manual-time", "1e400"),                  # overflows to inf
    ("last-scale-direction", "sideways"),
    ("manual-direction", "UP"),                # case matters
    ("last-replicas", "3.0"),                  # not an integer
    ("last-replicas", "true"),                 # bool instead of int
    ("last-replicas", "-1"),                   # negative replicas
    ("recommendations", "[[1, 2]"),            # bad JSON
    ("recommendations", "{}"),                 # not a list
    ("recommendations", "[[1, 2, 3]]"),        # wrong shape: three items
    ("recommendations", "[5]"),                # wrong shape: not a pair
    ("recommendations", "[[1, 2.5]]"),         # float replicas
    ("recommendations", "[[1, true]]"),        # bool instead of int
    ("recommendations", '[[1, "2"]]'),         # string replicas
    ("events", "[[true, 1]]"),                 # bool as a time
    ("events", "[[NaN, 1]]"),                  # not finite
    ("events", "[[null, 1]]"),
    ("events", "garbage"),
]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("key", "raw"), UNREADABLE)
def test_unreadable_value_is_dropped_with_one_problem(prefix: str, key: str, raw: str) -> None:
    good = STATES["history"]
    labels = {**encode_state(good, prefix), prefix + key: raw}
    decoded = decode_state(labels, prefix)
    assert len(decoded.problems) == 1
    assert prefix + key in decoded.problems[0]
    field = {"last-scale-time": "last_scale_time", "last-scale-direction": "last_scale_direction",
             "last-replicas": "last_written", "manual-time": "manual_time",
             "manual-direction": "manual_direction"}.get(key, key)
    default = getattr(TargetState(), field)
    assert getattr(decoded.state, field) == default
    # Everything else is still read.
    others = [f for f in ("last_scale_time", "last_written", "recommendations", "events")
              if f != field]
    for other in others:
        assert getattr(decoded.state, other) == getattr(good, other), other


def test_each_unreadable_value_is_a_problem_of_its_own() -> None:
    labels = {SWARM_PREFIX + "last-scale-time": "x", SWARM_PREFIX + "last-replicas": "-3",
              SWARM_PREFIX + "events": "[", SWARM_PREFIX + "manual-direction": "?"}
    decoded = decode_state(labels, SWARM_PREFIX)
    assert decoded.state == TargetState()
    assert len(decoded.problems) == 4


def test_a_long_garbage_value_is_shortened_in_the_problem() -> None:
    decoded = decode_state({SWARM_PREFIX + "events": "x" * 10_000}, SWARM_PREFIX)
    assert len(decoded.problems) == 1
    assert len(decoded.problems[0]) < 200


@pytest.mark.parametrize(("raw", "paused"), [
    ("true", True),
    ("TRUE", True),
    (" true ", True),
    ("True", True),
    ("false", False),
    ("", False),
    ("yes", False),
    ("1", False),
    (None, False),  # missing
])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_paused(prefix: str, raw: str | None, paused: bool) -> None:
    labels = {} if raw is None else {prefix + PAUSED: raw}
    decoded = decode_state(labels, prefix)
    assert decoded.paused is paused
    assert decoded.problems == ()


def test_paused_does_not_depend_on_the_rest_being_readable() -> None:
    decoded = decode_state({SWARM_PREFIX + PAUSED: "true", SWARM_PREFIX + "events": "["},
                           SWARM_PREFIX)
    assert decoded.paused is True
    assert len(decoded.problems) == 1


# --- regressions: these were bugs in decode_state (found by these tests, since fixed) -----------


def test_deeply_nested_json_is_dropped_not_raised() -> None:
    decoded = decode_state({SWARM_PREFIX + "events": "[" * 100_000}, SWARM_PREFIX)
    assert decoded.state.events == ()
    assert len(decoded.problems) == 1


def test_string_time_in_pairs_is_a_wrong_shape() -> None:
    decoded = decode_state({SWARM_PREFIX + "events": '[["1.5", 3]]'}, SWARM_PREFIX)
    assert decoded.state.events == ()
    assert len(decoded.problems) == 1


def test_negative_recommendation_is_dropped() -> None:
    decoded = decode_state({SWARM_PREFIX + "recommendations": "[[10, -4]]"}, SWARM_PREFIX)
    assert decoded.state.recommendations == ()
    assert len(decoded.problems) == 1


# --------------------------------------------------------------------------- merge_states

MEMORY = TargetState(last_scale_time=100.0, last_scale_direction=1, last_written=5,
                     recommendations=((90.0, 5),), events=((100.0, 2),))


@pytest.mark.parametrize(("on_target", "memory", "expected_written"), [
    pytest.param(TargetState(), None, None, id="nothing-remembered-adopt-target"),
    pytest.param(TargetState(), TargetState(last_written=3), 3,
                 id="adopted-in-memory-survives-empty-labels"),
    pytest.param(TargetState(last_scale_time=200.0, last_written=7), MEMORY, 7,
                 id="newer-write-by-another-daemon-wins"),
    pytest.param(TargetState(last_scale_time=50.0, last_written=2), MEMORY, 5,
                 id="older-labels-lose"),
    pytest.param(TargetState(last_scale_time=100.0, last_written=5), MEMORY, 5, id="same"),
])
def test_merge_states_last_written(on_target: TargetState, memory: TargetState | None,
                                   expected_written: int | None) -> None:
    assert merge_states(on_target, memory).last_written == expected_written


def test_merge_states_keeps_the_union_of_history() -> None:
    on_target = TargetState(recommendations=((80.0, 4), (90.0, 5)), events=((70.0, 1),))
    merged = merge_states(on_target, MEMORY)
    assert merged.recommendations == ((80.0, 4), (90.0, 5))
    assert merged.events == ((70.0, 1), (100.0, 2))


# --------------------------------------------------------------------------- remembered_for


@pytest.mark.parametrize(("memory", "remembered_uid", "uid", "expected"), [
    pytest.param(MEMORY, "svc-1", "svc-1", MEMORY, id="same-object-keeps-memory"),
    pytest.param(MEMORY, "svc-1", "svc-2", None, id="recreated-object-starts-afresh"),
    pytest.param(MEMORY, "", "svc-1", MEMORY, id="first-read-of-a-uid-keeps-memory"),
    pytest.param(MEMORY, "svc-1", "", MEMORY, id="backend-without-uid-keeps-memory"),
    pytest.param(None, "svc-1", "svc-2", None, id="nothing-remembered"),
])
def test_remembered_for(memory: TargetState | None, remembered_uid: str, uid: str,
                        expected: TargetState | None) -> None:
    assert remembered_for(memory, remembered_uid, uid) == expected
