"""Knowing sooner than ZooKeeper that a shard's leader is dead.

A leader's node whose process is gone refuses connections at once (its host is up, nothing
listens), while its ZooKeeper session lives on for the session timeout. Every other node with
a member of the shard knocks on the leader node's port every KNOCK_EVERY_S; after
REFUSALS_NEEDED refusals in a row the leader is treated as lost and its znodes are removed, so
that the failover starts within a few hundred milliseconds instead of seconds. A paused node
does not refuse (the kernel accepts for a paused process): it waits for ZooKeeper's verdict.

A node cut off by the network gives no answer at all. One node's silence proves little (a
partition between two DCs leaves the leader reachable from the third), so a node that has had
no answer for SILENT_FOR_S says so in ZooKeeper (/bank/suspects/<shard>/<dc>), and the leader
is treated as lost only once the node of every other DC suspects it, and they are a majority.
That beats the session's expiry by seconds when the cut DC also held ZooKeeper's leader: the
ensemble first takes some 1.3 s to elect another, and the new leader then gives every session
its whole timeout again. The failover is as safe either way: it detaches every standby before
promoting one, and a cut-off primary can acknowledge nothing without them.
"""

from __future__ import annotations

import socket

KNOCK_EVERY_S = 0.05
KNOCK_TIMEOUT_S = 0.2
REFUSALS_NEEDED = 2
ALIVE, REFUSED, SILENT = "alive", "refused", "silent"
SILENT_FOR_S = 0.6


def knock(endpoint: str, timeout_s: float = KNOCK_TIMEOUT_S) -> str:
    """ALIVE when something accepts on `endpoint` (host:port), REFUSED when nothing listens
    there, SILENT when no answer came (a cut link, a host down)."""
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return ALIVE
    except ConnectionRefusedError:
        return REFUSED
    except OSError:
        return SILENT


class Refusals:
    """Refusals in a row of each shard's leader endpoint, counted only once it was seen alive:
    a leader whose node has not started yet is not a dead one (seen: while the cluster came up,
    a node that started first failed over a shard whose leading node was still starting)."""

    def __init__(self, needed: int = REFUSALS_NEEDED) -> None:
        self.needed = needed
        self._count: dict[tuple[int, str], int] = {}

    def observe(self, shard: int, endpoint: str, outcome: str) -> bool:
        """True once `endpoint`, alive before, has refused `needed` times in a row (and on every
        refusal after)."""
        key = (shard, endpoint)
        self._count = {k: v for k, v in self._count.items() if k[0] != shard or k == key}
        if outcome == ALIVE:
            self._count[key] = 0
        elif key in self._count:  # seen alive before: refusals in a row; a silence starts again
            self._count[key] = self._count[key] + 1 if outcome == REFUSED else 0
        return self._count.get(key, 0) >= self.needed


class Silences:
    """Since when each shard's leader endpoint, seen alive before, has given no answer."""

    def __init__(self, silent_for_s: float = SILENT_FOR_S) -> None:
        self.silent_for_s = silent_for_s
        self._since: dict[tuple[int, str], float | None] = {}

    def observe(self, shard: int, endpoint: str, outcome: str, now: float) -> bool:
        """True once `endpoint` has been silent (no answer, no refusal) for `silent_for_s`."""
        key = (shard, endpoint)
        self._since = {k: v for k, v in self._since.items() if k[0] != shard or k == key}
        if outcome == ALIVE:
            self._since[key] = None
        elif key in self._since:  # seen alive before
            if outcome != SILENT:
                self._since[key] = None
            elif self._since[key] is None:
                self._since[key] = now
        since = self._since.get(key)
        return since is not None and now - since >= self.silent_for_s


def cut_off(leader_dc: str, dcs: list[str], suspecting: list[str]) -> bool:
    """Whether the leader in `leader_dc` is cut off: every other DC suspects it, and they are a
    majority of all."""
    others = [dc for dc in dcs if dc != leader_dc]
    return bool(others) and set(others) <= set(suspecting) and len(others) > len(dcs) // 2
