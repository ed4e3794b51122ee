"""The journal of slot moves in ZooKeeper: one znode per move, its state rewritten at each step,
so that a move cut half way is resumed or rolled back by whoever looks next; and the lock that
lets one move run at a time (an ephemeral znode: it goes with its mover's session).

  /bank/moves/<id>   {"id", "slots": [first, last], "from", "to", "state", "freeze_ms",
                      "copied_rows", "started_at", "finished_at", "error"}
  /bank/locks/mover  held by the process moving slots now
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from services.dcs import paths

MOVES_PATH = paths.MOVES
LOCK_PATH = paths.MOVER_LOCK

# The states of a move, in order. Before HANDED_OVER a move is rolled back when cut; from
# HANDED_OVER on (the source has let the slots go for good) it is only ever finished.
COPYING, FROZEN, HANDED_OVER, TARGET_OWNS, FLIPPED, DONE, ROLLED_BACK = (
    "copying", "frozen", "handed_over", "target_owns", "flipped", "done", "rolled_back",
)  # fmt: skip
FINISHED = (DONE, ROLLED_BACK)


class MoverBusy(Exception):
    """Another process is moving slots now."""


class Journal:
    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk
        zk.ensure_path(MOVES_PATH)
        zk.ensure_path(LOCK_PATH.rsplit("/", 1)[0])

    def lock(self, owner: str) -> None:
        try:
            self.zk.create(LOCK_PATH, owner.encode(), ephemeral=True)
        except NodeExistsError:
            holder, _ = self.zk.get(LOCK_PATH)
            raise MoverBusy(
                f"another mover is at work ({holder.decode()}); try again when it is done"
            ) from None

    def unlock(self) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.delete(LOCK_PATH)

    def start(self, first: int, last: int, source: int, target: int) -> dict[str, Any]:
        record = {
            "id": f"{time.strftime('%Y%m%d-%H%M%S')}-{first}-{last}", "slots": [first, last], "from": source,
            "to": target, "state": COPYING, "freeze_ms": None, "copied_rows": 0, "started_at": time.time(),
            "finished_at": None, "error": "",
        }  # fmt: skip
        self.zk.create(f"{MOVES_PATH}/{record['id']}", json.dumps(record).encode())
        return record

    def update(self, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
        record.update(changes)
        if record["state"] in FINISHED and record["finished_at"] is None:
            record["finished_at"] = time.time()
        self.zk.set(f"{MOVES_PATH}/{record['id']}", json.dumps(record).encode())
        return record

    def update_soon(self, record: dict[str, Any], **changes: Any) -> None:
        """As `update`, without waiting for ZooKeeper's answer: for a state that changes nothing
        on resume (a later `update` of this session is applied after it: sessions are FIFO)."""
        record.update(changes)
        self.zk.set_async(f"{MOVES_PATH}/{record['id']}", json.dumps(record).encode())

    def all(self) -> list[dict[str, Any]]:
        return read_all(self.zk)

    def unfinished(self) -> list[dict[str, Any]]:
        return [r for r in self.all() if r["state"] not in FINISHED]


def read_all(zk: KazooClient) -> list[dict[str, Any]]:
    """Every move's record, oldest first (none before the first move)."""
    try:
        children = sorted(zk.get_children(MOVES_PATH))
    except NoNodeError:
        return []
    records = []
    for child in children:
        with contextlib.suppress(NoNodeError):
            data, _ = zk.get(f"{MOVES_PATH}/{child}")
            records.append(json.loads(data))
    return records
