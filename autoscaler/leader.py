"""Who may write. Standby copies keep evaluating (explain, metrics, records) but never write."""

from __future__ import annotations

from typing import Any, Protocol


class Leadership(Protocol):
    """Asked before every write; `role` is shown in /readyz and the `leader` metric."""

    def is_leader(self) -> bool: ...

    @property
    def role(self) -> str: ...

    def close(self) -> None: ...


class NoElection:
    """`leader_election.mode: none`: this process always acts (one copy only)."""

    role = "leader"

    def is_leader(self) -> bool:
        return True

    def close(self) -> None:
        return None


def may_write(*, dry_run: bool, paused: bool, leader: bool) -> tuple[bool, str]:
    """The write gate: dry-run never writes, a paused target is never written, only the
    leader writes. Returns (allowed, reason when not)."""
    if dry_run:
        return False, "dry-run"
    if paused:
        return False, "paused"
    if not leader:
        return False, "standby (not the leader)"
    return True, ""


class SwarmLeader:
    """`leader_election.mode: swarm`: act only while this engine is the Raft leader.

    Checked at every tick, so a daemon on each manager gives high availability with no extra
    parts: when the leader's node is lost, another manager becomes leader and its daemon acts.
    """

    def __init__(self, docker_client: Any) -> None:
        self._client = docker_client
        self.role = "standby"

    def is_leader(self) -> bool:
        try:
            swarm = self._client.info().get("Swarm", {})
            node_id = swarm.get("NodeID")
            if not node_id or not swarm.get("ControlAvailable"):
                self.role = "standby (not a manager)"
                return False
            node = self._client.api.inspect_node(node_id)
            leader = bool(node.get("ManagerStatus", {}).get("Leader"))
        except Exception:
            self.role = "standby (docker unreachable)"
            return False
        self.role = "leader" if leader else "standby"
        return leader

    def close(self) -> None:
        return None
