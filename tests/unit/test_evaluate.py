"""The evaluation's own rule: only finite data in an `ok` signal reaches a policy."""

from __future__ import annotations

import math

import pytest

from autoscaler.evaluate import checked_signal, history_held
from autoscaler.model import Sample, Signal, SignalState
from policies import Policy
from policies.capacity import CapacityPolicy
from policies.seasonal import SeasonalPolicy, history_of

OK, EMPTY, NAN, STALE = SignalState.OK, SignalState.EMPTY, SignalState.NAN, SignalState.STALE


def ok(*values: float) -> Signal:
    return Signal(OK, tuple(Sample(float(i), v) for i, v in enumerate(values)))


@pytest.mark.parametrize(("signal", "state"), [
    (ok(1.0, 2.0), OK),
    (ok(0.0), OK),
    (ok(), EMPTY),
    (ok(1.0, math.nan), NAN),
    (ok(math.inf), NAN),
    (ok(-math.inf, 1.0), NAN),
    (ok(1.7e308), OK),  # finite, however large: the policy decides what it can compute
    (Signal.bad(STALE, "old"), STALE),
    (Signal.bad(EMPTY, "no series"), EMPTY),
], ids=["finite", "zero", "no-samples", "nan", "plus-inf", "minus-inf", "huge", "stale",
        "empty"])
def test_checked_signal(signal: Signal, state: SignalState) -> None:
    checked = checked_signal(signal)
    assert checked.state is state
    assert checked == signal if state is signal.state else not checked.samples


SEASONAL = SeasonalPolicy(query="q")
LIVE = (Sample(1000.0, 5.0),)


@pytest.mark.parametrize(("policy", "signal", "held"), [
    pytest.param(CapacityPolicy(type="capacity", query="q"), Signal.ok(LIVE), None,
                 id="a-policy-that-reads-no-history"),
    pytest.param(SEASONAL, Signal(SignalState.OK, LIVE, history_detail="history loading"), 0.0,
                 id="loading-is-zero"),
    pytest.param(SEASONAL, Signal(SignalState.OK, LIVE, "", history_of([(0.0, 1.0)])), 0.0,
                 id="one-point-is-zero"),
    pytest.param(SEASONAL, Signal(SignalState.OK, LIVE, "",
                                  history_of([(100.0, 1.0), (160.0, 1.0), (820.0, 2.0)])),
                 720.0, id="first-to-last-point"),
])
def test_history_held(policy: Policy, signal: Signal, held: float | None) -> None:
    assert history_held(policy, signal) == held
