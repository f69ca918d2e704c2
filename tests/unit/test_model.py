"""The value types of `autoscaler.model`: frozen to the type checker, plain at run time.

`record` trades the run-time guard of a frozen dataclass for construction three times as
cheap; these tests hold it to what a frozen one gave: equality and hashing by fields,
`replace` for a changed copy, and mypy rejecting any assignment to a field.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from autoscaler import model
from autoscaler.model import PolicyResult, Sample, Signal, SignalState

REPO = Path(__file__).resolve().parents[2]

RECORDS = [model.Sample, model.Signal, model.SignalRequest, model.Recommendation,
           model.PolicyContext, model.PolicyResult, model.GuardResult, model.Clip,
           model.TargetState, model.TargetStatus, model.Decision]


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_every_value_type_is_slotted_and_hashable_by_its_fields(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert "__slots__" in vars(cls)  # no per-instance dict: small and fast
    assert cls.__hash__ is not None


@pytest.mark.parametrize(("a", "b", "same"), [
    (Sample(1.0, 2.0), Sample(1.0, 2.0), True),
    (Sample(1.0, 2.0), Sample(1.0, 3.0), False),
    (Signal(SignalState.OK, (Sample(1.0, 2.0),)), Signal(SignalState.OK, (Sample(1.0, 2.0),)),
     True),
    (Signal(SignalState.OK), Signal(SignalState.EMPTY), False),
    (PolicyResult("cpu", "threshold", SignalState.OK, 50.0, 3, "why"),
     PolicyResult("cpu", "threshold", SignalState.OK, 50.0, 3, "why"), True),
    (PolicyResult("cpu", "threshold", SignalState.OK, 50.0, 3, "why"),
     PolicyResult("cpu", "threshold", SignalState.OK, 50.0, 4, "why"), False),
])
def test_equal_and_hashed_by_fields(a: object, b: object, same: bool) -> None:
    assert (a == b) is same
    assert len({a, b}) == (1 if same else 2)  # equal values hash alike


def test_replace_gives_a_changed_copy_and_leaves_the_original() -> None:
    old = Sample(1.0, 2.0)
    new = dataclasses.replace(old, value=5.0)
    assert (old, new) == (Sample(1.0, 2.0), Sample(1.0, 5.0))


def test_mypy_rejects_assigning_a_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # where mypy finds the autoscaler package
    snippet = tmp_path / "assigns.py"
    snippet.write_text(textwrap.dedent("""\
        from autoscaler.model import Sample, Signal, SignalState
        s = Sample(1.0, 2.0)
        s.value = 3.0
        Signal(SignalState.OK).detail = "changed"
    """))
    out, _, status = mypy_api.run([
        "--strict", "--no-incremental", "--follow-imports=silent",
        "--cache-dir", str(tmp_path / "cache"), str(snippet)])
    assert status == 1, out
    assert out.count("is read-only") == 2, out
