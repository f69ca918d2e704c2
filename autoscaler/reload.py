"""What a config reload keeps: a pure diff of the running config and the new one.

A target keeps its runtime (what stabilization and cooldowns remember, its actuator, its HPA
check) when its name and the workload it scales are unchanged; policies, bounds, behavior,
cooldowns and dry-run may change. `listen` and `leader_election` need a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.config import Settings, TargetConfig


def workload_key(target: TargetConfig) -> tuple[str, ...]:
    """What a reload must leave unchanged for a target to keep its state: its name and the
    workload it scales. Policies, bounds, behavior and cooldowns may change."""
    return (target.name, target.backend, target.service or "", target.namespace or "",
            target.deployment or "", target.statefulset or "",
            *(target.kube_workload() if target.scale_target_ref else ()))


@dataclass(frozen=True)
class ReloadSummary:
    """What `Engine.reload` changed, for the log."""

    kept: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    replaced: tuple[str, ...]  # same name, another workload: its state starts afresh
    interval: tuple[float, float]  # (before, after)
    prometheus_changed: bool
    needs_restart: tuple[str, ...]  # keys only a restart applies

    def describe(self) -> str:
        parts = [f"{len(self.kept)} target(s) kept with their state"]
        for label, names in (("added", self.added), ("removed", self.removed),
                             ("replaced (new workload, fresh state)", self.replaced)):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        before, after = self.interval
        if before != after:
            parts.append(f"evaluation_interval {before:g}s -> {after:g}s")
        if self.prometheus_changed:
            parts.append("new Prometheus connection")
        if self.needs_restart:
            parts.append(f"unchanged until a restart: {', '.join(self.needs_restart)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ReloadPlan:
    """`keep[i]`: the index of the running target whose runtime the new config's i-th target
    keeps, or None for a fresh one; `dropped`: running targets that go."""

    keep: tuple[int | None, ...]
    dropped: tuple[int, ...]
    summary: ReloadSummary


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """Match the new config's targets to the running ones by `workload_key`."""
    running = {workload_key(t): i for i, t in enumerate(old.targets)}
    keep: list[int | None] = []
    for target in new.targets:
        keep.append(running.pop(workload_key(target), None))
    added = [t.name for t, k in zip(new.targets, keep, strict=True) if k is None]
    removed = {old.targets[i].name for i in running.values()}
    summary = ReloadSummary(
        kept=tuple(t.name for t, k in zip(new.targets, keep, strict=True) if k is not None),
        added=tuple(n for n in added if n not in removed),
        removed=tuple(sorted(removed - set(added))),
        replaced=tuple(n for n in added if n in removed),
        interval=(old.evaluation_interval, new.evaluation_interval),
        prometheus_changed=new.prometheus != old.prometheus,
        needs_restart=tuple(key for key, changed in (
            ("listen", new.listen != old.listen),
            ("leader_election", new.leader_election != old.leader_election)) if changed),
    )
    return ReloadPlan(tuple(keep), tuple(sorted(running.values())), summary)
