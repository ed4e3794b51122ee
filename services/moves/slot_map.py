"""The slot map in ZooKeeper as a move reads and changes it: who owns a range of slots, and the
flip that names a move's target (compare-and-set on the map's version, read again on a conflict)."""

from __future__ import annotations

import logging

from kazoo.client import KazooClient

from services.dcs.store import Dcs
from services.moves.plan import SlotRanges, reassign

log = logging.getLogger(__name__)
FLIP_TRIES = 20


def read(zk: KazooClient) -> tuple[SlotRanges, int]:
    """The map's ranges (first, last, shard) and its znode's version."""
    return Dcs(zk).read_slots()


def owner(zk: KazooClient, first: int, last: int) -> int:
    """The one shard that owns slots `first`..`last`; ValueError if they span several."""
    ranges, _ = read(zk)
    owners = {shard for a, b, shard in ranges if a <= last and b >= first}
    if len(owners) != 1:
        raise ValueError(
            f"slots {first}-{last} span shards {sorted(owners)}: move one shard's slots at a time"
        )
    return owners.pop()


def flip(zk: KazooClient, first: int, last: int, target: int, move_id: str) -> None:
    """The map names `target` for slots `first`..`last` (nothing changes if it does already)."""
    for _ in range(FLIP_TRIES):
        ranges, version = read(zk)
        updated = reassign(ranges, first, last, target)
        if updated == ranges:
            return
        try:
            Dcs(zk).set_slots(updated, version)
            return
        except Exception as err:  # BadVersionError (someone else changed the map), or a set that may
            # have landed before its connection was lost: read the map again
            log.warning("event=slot_map_conflict move=%s error=%r", move_id, err)
    raise RuntimeError("the slot map kept changing under the move; resume it")
