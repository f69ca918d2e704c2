"""PNG plots of simulations: demand against serving capacity, replicas, queue and CPU.

matplotlib is imported here only, so the rest of the command stays fast to start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autoscaler.replay.simulate import RunResult

COLORS = {"profile": "tab:blue", "hpa-cpu": "tab:orange", "static": "tab:green",
          "reactive-oracle": "tab:gray", "clairvoyant-oracle": "black"}


def plot_simulation(results: Sequence[RunResult], path: Path, title: str) -> None:
    """Four stacked panels sharing the time axis; the first run drawn solid, others dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = results[0]
    hours = [row["t"] / 3600.0 for row in main.timeline]
    fig, axes = plt.subplots(4, 1, figsize=(12, 10), sharex=True)
    demand_ax, replicas_ax, queue_ax, cpu_ax = axes
    demand_ax.plot(hours, [r["demand"] for r in main.timeline], color="black", lw=1,
                   label="demand")
    for run in results:
        color = COLORS.get(run.contender)
        style = "-" if run is main else "--"
        xs = [row["t"] / 3600.0 for row in run.timeline]
        demand_ax.plot(xs, [r["capacity"] for r in run.timeline], ls=style, color=color,
                       lw=1, label=f"serving capacity ({run.contender})")
        replicas_ax.step(xs, [r["replicas"] for r in run.timeline], where="post", ls=style,
                         color=color, lw=1.2, label=f"replicas ({run.contender})")
        queue_ax.plot(xs, [r["queue"] for r in run.timeline], ls=style, color=color, lw=1,
                      label=run.contender)
        cpu_ax.plot(xs, [r["cpu"] if r["cpu"] is not None else float("nan")
                         for r in run.timeline], ls=style, color=color, lw=0.8,
                    label=run.contender)
    replicas_ax.step(hours, [r["ready"] for r in main.timeline], where="post", color="grey",
                     lw=0.8, alpha=0.7, label=f"ready ({main.contender})")
    ups = [(e["t"] / 3600.0, e["to"]) for e in main.events if e["to"] > e["from"]]
    downs = [(e["t"] / 3600.0, e["to"]) for e in main.events if e["to"] < e["from"]]
    if ups:
        replicas_ax.scatter(*zip(*ups, strict=True), marker="^", color="tab:red", s=18,
                            zorder=3, label="scale up")
    if downs:
        replicas_ax.scatter(*zip(*downs, strict=True), marker="v", color="tab:purple", s=18,
                            zorder=3, label="scale down")
    demand_ax.set_ylabel("emails/hour")
    replicas_ax.set_ylabel("instances")
    queue_ax.set_ylabel("queued messages")
    cpu_ax.set_ylabel("CPU %")
    cpu_ax.set_xlabel("hours")
    cpu_ax.axhline(70, color="grey", lw=0.6, ls=":")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, ncols=2)
    demand_ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
