"""The one evaluate loop of `simulate` and `backtest`: a target evaluated on a simulated clock.

What the live engine carries from one tick to the next — the state that would be on the
target, when each policy last did not report (for settling), how often each rule clipped —
is carried here the same way for both replays, so they cannot drift apart from each other.
The decision is taken as applied: in replay every write succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.decide import TargetRules
from autoscaler.evaluate import GuardSpec, Unreported, evaluate, note_unreported
from autoscaler.model import Decision, Signal, TargetState, TargetStatus
from policies import Policy


@dataclass
class ReplayTarget:
    """One target's policies, guards and rules, and what carries between its evaluations."""

    name: str
    policies: Sequence[Policy]
    guards: Sequence[GuardSpec]
    rules: TargetRules
    state: TargetState = field(default_factory=TargetState)
    unreported: Unreported = field(default_factory=Unreported)  # policy -> when its gap ended
    clips: dict[str, int] = field(default_factory=dict)  # clip kind -> how many times

    def evaluate(self, now: float, current: int, ready: int | None,
                 policy_signals: Mapping[str, Signal],
                 guard_signals: Mapping[str, Signal]) -> Decision:
        """One evaluation at `now`, as the live loop's; its state becomes the target's."""
        decision = evaluate(target=self.name, now=now,
                            status=TargetStatus(current=current, ready=ready, state=self.state),
                            policies=self.policies, policy_signals=policy_signals,
                            guards=self.guards, guard_signals=guard_signals, rules=self.rules,
                            last_unreported=self.unreported)
        note_unreported(self.unreported, decision)
        self.state = decision.state
        for clip in decision.clips:
            self.clips[str(clip.kind)] = self.clips.get(str(clip.kind), 0) + 1
        return decision
