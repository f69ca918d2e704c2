"""SignalBatch: a target goes on once all its own signals are in, or when the read ends."""

from __future__ import annotations

import pytest

from autoscaler.loop import SignalBatch
from autoscaler.model import Sample, Signal, SignalState

OK = Signal.ok((Sample(1.0, 1.0),))
BAD = Signal.bad(SignalState.ERROR, "x")
KEYS = {"a": ["a1", "a2"], "b": ["b1"], "none": []}


@pytest.mark.parametrize(
    ("arrivals", "finished", "ready"),
    [
        ([], False, {"none"}),
        ([{"a1": OK}], False, {"none"}),
        ([{"a1": OK}, {"a2": OK}], False, {"a", "none"}),
        ([{"a1": OK, "b1": OK}, {"a1": BAD}], False, {"b", "none"}),  # a repeat is no a2
        ([{"zz": OK}], False, {"none"}),  # a key nobody asked for
        ([{"a1": OK}], True, {"a", "b", "none"}),  # the end: everyone goes on
    ],
)
def test_who_may_go_on(arrivals: list[dict[str, Signal]], finished: bool,
                       ready: set[str]) -> None:
    batch = SignalBatch(KEYS)
    for signals in arrivals:
        batch.add(signals)
    if finished:
        batch.finish({}, 0.5)
    assert {t for t in KEYS if batch.wait(t, KEYS[t], 0.0) is not None} == ready


def test_a_target_gets_its_own_signals_and_the_first_answer_wins() -> None:
    batch = SignalBatch(KEYS)
    batch.add({"a1": OK, "b1": BAD})
    batch.add({"a1": BAD})
    batch.finish({"a2": BAD}, 0.5)
    found = batch.wait("a", KEYS["a"], 0.0)
    assert found is not None
    signals, seconds = found
    assert signals == {"a1": OK, "a2": BAD}
    assert seconds >= 0
    assert batch.wait("b", KEYS["b"], 0.0) == ({"b1": BAD}, pytest.approx(seconds, abs=1))
