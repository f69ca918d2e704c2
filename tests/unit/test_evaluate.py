"""The evaluation's own rule: only finite data in an `ok` signal reaches a policy."""

from __future__ import annotations

import math

import pytest

from autoscaler.evaluate import checked_signal
from autoscaler.model import Sample, Signal, SignalState

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
