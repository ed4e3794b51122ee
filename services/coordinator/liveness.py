"""Knowing sooner than ZooKeeper that a shard's leader is dead.

A leader's node whose process is gone refuses connections at once (its host is up, nothing
listens), while its ZooKeeper session lives on for the session timeout. Every other node with
a member of the shard knocks on the leader node's port every KNOCK_EVERY_S; after
REFUSALS_NEEDED refusals in a row the leader is treated as lost and its znodes are removed, so
that the failover starts within a few hundred milliseconds instead of seconds. A paused node,
or one cut off by the network, does not refuse (the kernel accepts for a paused process, and
a cut link gives no answer at all): those still wait for ZooKeeper's verdict. The failover
itself is as safe either way: it detaches every standby before promoting one.
"""

from __future__ import annotations

import socket

KNOCK_EVERY_S = 0.05
KNOCK_TIMEOUT_S = 0.2
REFUSALS_NEEDED = 2
ALIVE, REFUSED, SILENT = "alive", "refused", "silent"


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
