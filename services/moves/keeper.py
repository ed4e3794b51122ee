"""The bank's nodes finish or roll back a slot move whose mover stopped half way.

A mover (`bankctl move-slots`, `rebalance`, `remove-shard`) holds the movers' lock, an
ephemeral znode, for as long as it works. When it dies (its process killed, its host lost), its
ZooKeeper session expires and the lock goes; when it stops on an error it cannot undo (a shard
it needs lost in the middle of a step), it lets the lock go itself. Either way the journal still
says where the move was, and while a move is left frozen the slots it moves take no writes.

Every bank-node keeps watch: when the lock is free and a move is left before its flip, the node
that takes the lock first resumes it as `move-slots --resume` would (rolled back before the
hand-over, finished after it), and tries again each round until its shards answer. A move left
flipped (only the source's old rows to remove) is cleaned once its grace period is long past,
so that a mover running a batch of moves, which cleans them together at its end, keeps them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient

from services.moves import journal as j
from services.moves.mover import SlotMover

log = logging.getLogger(__name__)

EVERY_S = 0.25  # how often a node looks for a free lock and a move left half way
CLEAN_AFTER_S = 60.0  # a flipped move is cleaned by a node this long after its flip
LEFT_BEFORE_FLIP = (j.COPYING, j.FROZEN, j.HANDED_OVER, j.TARGET_OWNS)


def orphaned(record: dict[str, Any], now: float, clean_after_s: float = CLEAN_AFTER_S) -> bool:
    """Whether a node should resume `record` when no mover holds the lock: any move left before
    its flip (its slots may be frozen), and a flipped one long after its flip."""
    if record["state"] in LEFT_BEFORE_FLIP:
        return True
    flipped_at = record.get("flipped_at") or record.get("started_at") or now
    return bool(record["state"] == j.FLIPPED and now - float(flipped_at) >= clean_after_s)


class MoveKeeper:
    """Resumes the moves their movers left, from one node at a time (the lock decides)."""

    def __init__(
        self, zk: KazooClient, conninfo_of: Callable[[int], str], name: str,
        every_s: float = EVERY_S, clean_after_s: float = CLEAN_AFTER_S,
    ) -> None:  # fmt: skip
        self.zk = zk
        self.every_s = every_s
        self.clean_after_s = clean_after_s
        self.mover = SlotMover(zk, conninfo_of, self._say, name=f"keeper of {name}", lock_wait_s=0.0)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="move-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def run_once(self) -> list[dict[str, Any]]:
        """One look: the moves this node resumed (none while a mover holds the lock)."""
        if not self.zk.connected or self.zk.exists(j.LOCK_PATH):
            return []
        if not any(self._due(r) for r in self.mover.journal.unfinished()):
            return []
        try:
            return self.mover.resume(due=self._due)
        except j.MoverBusy:  # another node (or a mover) was quicker
            return []

    def _due(self, record: dict[str, Any]) -> bool:
        return orphaned(record, time.time(), self.clean_after_s)

    def _loop(self) -> None:
        while not self._stopping.wait(self.every_s):
            try:
                for record in self.run_once():
                    log.warning("event=move_resumed move=%s state=%s", record["id"], record["state"])
            except Exception as err:  # a shard still without a leader, say: the next round tries again
                log.warning("event=move_resume_failed error=%r", err)

    @staticmethod
    def _say(line: str) -> None:
        log.info("event=move_keeper line=%r", line)
