"""The journal of slot moves in ZooKeeper: one znode per move, its state rewritten at each step,
so that a move cut half way is resumed or rolled back by whoever looks next; and the lock that
lets one move run at a time (an ephemeral znode: it goes with its mover's session).

  /bank/moves/<id>   {"id", "slots": [first, last], "from", "to", "state", "freeze_ms",
                      "copied_rows", "started_at", "finished_at", "error"}
  /bank/locks/mover  held by the process moving slots now

Every update of a record is a compare-and-set on the version its writer last saw: a mover whose
session was lost while it worked (and whose move the bank's nodes took over, see keeper.py)
finds out at its next step and stops there.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from services.dcs import paths

MOVES_PATH = paths.MOVES
LOCK_PATH = paths.MOVER_LOCK

# The states of a move, in order. Before HANDED_OVER a move is rolled back when cut; from
# HANDED_OVER on (the source has let the slots go for good) it is only ever finished.
COPYING, FROZEN, HANDED_OVER, TARGET_OWNS, FLIPPED, DONE, ROLLED_BACK = (
    "copying", "frozen", "handed_over", "target_owns", "flipped", "done", "rolled_back",
)  # fmt: skip
FINISHED = (DONE, ROLLED_BACK)
LOCK_RETRY_S = 0.1


class MoveTakenOver(Exception):
    """Someone else changed the move's record since this process last wrote it (or this process
    no longer holds the movers' lock): the move is theirs now."""


class MoverBusy(Exception):
    """Another process is moving slots now."""


class Journal:
    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk
        self.versions: dict[str, int] = {}  # move id -> the version of its record this process saw
        self.finished: dict[str, dict[str, Any]] = {}  # records that will not change again
        self.locked_session: int | None = None
        zk.ensure_path(MOVES_PATH)
        zk.ensure_path(LOCK_PATH.rsplit("/", 1)[0])

    def lock(self, owner: str, wait_s: float = 0.0) -> None:
        """Takes the movers' lock, waiting up to `wait_s` for whoever holds it."""
        give_up = time.monotonic() + wait_s
        while True:
            try:
                self.zk.create(LOCK_PATH, owner.encode(), ephemeral=True)
                self.locked_session = self._session()
                return
            except NodeExistsError:
                if time.monotonic() >= give_up:
                    holder = self._holder()
                    raise MoverBusy(
                        f"another mover is at work ({holder}); try again when it is done"
                    ) from None
            time.sleep(LOCK_RETRY_S)

    def unlock(self) -> None:
        """Lets the lock go, if it is this session's."""
        session, self.locked_session = self.locked_session, None
        with contextlib.suppress(NoNodeError):
            _, stat = self.zk.get(LOCK_PATH)
            if session is not None and stat.ephemeralOwner == session:
                self.zk.delete(LOCK_PATH)

    def holds_lock(self) -> bool:
        """True while the session that took the lock lives (its ephemeral znode lives with it)."""
        held = self.locked_session
        return held is not None and bool(self.zk.connected) and self._session() == held

    def start(self, first: int, last: int, source: int, target: int) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": f"{time.strftime('%Y%m%d-%H%M%S')}-{first}-{last}", "slots": [first, last], "from": source,
            "to": target, "state": COPYING, "freeze_ms": None, "copied_rows": 0, "started_at": time.time(),
            "finished_at": None, "error": "",
        }  # fmt: skip
        self.zk.create(f"{MOVES_PATH}/{record['id']}", json.dumps(record).encode())
        self.versions[record["id"]] = 0
        return record

    def update(self, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Writes the record with `changes`, if nobody else wrote it since (MoveTakenOver)."""
        record.update(changes)
        if record["state"] in FINISHED and record["finished_at"] is None:
            record["finished_at"] = time.time()
        path = f"{MOVES_PATH}/{record['id']}"
        try:
            stat = self.zk.set(path, json.dumps(record).encode(), version=self.versions.get(record["id"], -1))
        except BadVersionError:
            raise MoveTakenOver(f"move {record['id']} was changed by another process") from None
        self.versions[record["id"]] = stat.version
        return record

    def update_soon(self, record: dict[str, Any], **changes: Any) -> None:
        """As `update`, without waiting for ZooKeeper's answer: for a state that changes nothing
        on resume (a later `update` of this session is applied after it: sessions are FIFO, and
        it expects the version this one makes)."""
        record.update(changes)
        version = self.versions.get(record["id"], -1)
        self.zk.set_async(f"{MOVES_PATH}/{record['id']}", json.dumps(record).encode(), version=version)
        if version >= 0:
            self.versions[record["id"]] = version + 1

    def all(self) -> list[dict[str, Any]]:
        return read_all(self.zk, self.versions, self.finished)

    def unfinished(self) -> list[dict[str, Any]]:
        return [r for r in self.all() if r["state"] not in FINISHED]

    def _session(self) -> int | None:
        client_id = self.zk.client_id
        return int(client_id[0]) if client_id else None

    def _holder(self) -> str:
        try:
            holder, _ = self.zk.get(LOCK_PATH)
        except NoNodeError:
            return "just finished"
        return holder.decode()


def read_all(
    zk: KazooClient, versions: dict[str, int] | None = None, finished: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every move's record, oldest first (none before the first move). `versions` is given each
    record's version as read; records in `finished` are not read again (they do not change),
    and finished ones read are added to it."""
    try:
        children = sorted(zk.get_children(MOVES_PATH))
    except NoNodeError:
        return []
    records = []
    for child in children:
        if finished is not None and child in finished:
            records.append(finished[child])
            continue
        with contextlib.suppress(NoNodeError):
            data, stat = zk.get(f"{MOVES_PATH}/{child}")
            record = json.loads(data)
            records.append(record)
            if versions is not None:
                versions[record["id"]] = stat.version
            if finished is not None and record["state"] in FINISHED:
                finished[child] = record
    return records
