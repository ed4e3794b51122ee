"""`bankctl move-slots`: a slot move run from the command line, on the cluster `up` recorded
(the mover itself is services/moves/mover.py; this wires it to the cluster's primaries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.common.identifiers import NUM_SLOTS
from services.dcs.store import Dcs
from services.moves.mover import SlotMover
from services.moves.plan import plan_rebalance

# The mover's ZooKeeper session: when its process dies, the movers' lock goes after this long and
# the bank's nodes resume its move (the slots of a move left frozen take no writes meanwhile).
MOVER_SESSION_S = 2.0


def parse_slots(text: str) -> tuple[int, int]:
    """'A-B' (or 'A') as a range of slots."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"--slots must be A-B (slot numbers), not {text!r}") from None
    if not 0 <= low <= high < NUM_SLOTS:
        raise ValueError(f"--slots must be within 0-{NUM_SLOTS - 1} with A <= B, not {text!r}")
    return low, high


def mover(
    state: ClusterState, say: Callable[[str], None], **options: Any
) -> tuple[SlotMover, Callable[[], None]]:
    """A mover of this cluster's slots, and how to close it."""
    dcs = zk_client(state, timeout_s=10)

    def conninfo_of(shard: int) -> str:
        route = dcs.read_table().routes.get(shard)
        leader_dc = route.leader_dc if route else state.spec.primary_dc(shard)
        return member_instance(state, shard, leader_dc).conninfo(application_name="bankctl-mover")

    return SlotMover(dcs.client, conninfo_of, say, **options), dcs.close


def move_slots(
    state: ClusterState, first: int, last: int, target: int, say: Callable[[str], None]
) -> dict[str, Any]:
    if target not in state.active_shards:
        raise ValueError(f"--to must be a shard of this cluster ({state.active_shards}), not {target}")
    slot_mover, close = mover(state, say)
    try:
        return slot_mover.move(first, last, target)
    finally:
        close()


def resume(state: ClusterState, say: Callable[[str], None]) -> list[dict[str, Any]]:
    slot_mover, close = mover(state, say)
    try:
        return slot_mover.resume()
    finally:
        close()


def rebalance(
    state: ClusterState, batch: int, say: Callable[[str], None], leaving: int | None = None
) -> list[dict[str, Any]]:
    """Moves batches of slots, one at a time, until every shard owns an equal share (and the
    shard `leaving`, if any, owns none)."""
    slot_mover, close = mover(state, say)
    try:
        raw = Dcs(slot_mover.zk).read_table().slot_ranges
        plan = plan_rebalance(raw, [s for s in state.active_shards if s != leaving], batch)
        say(
            f"rebalance: {len(plan)} batch(es) of at most {batch} slots"
            if plan
            else "rebalance: already balanced"
        )
        records = []
        for number, step in enumerate(plan, 1):
            where = f"slots {step.first}-{step.last}, shard {step.source} -> {step.target}"
            say(f"batch {number}/{len(plan)}: {where}")
            records.append(slot_mover.move(step.first, step.last, step.target, clean=False))
        if plan:
            say(f"rebalance: the moved rows leave their old shards after {slot_mover.grace_s:g} s of grace")
        cleaned = {r["id"]: r for r in slot_mover.clean_moved()}
        return [cleaned.get(r["id"], r) for r in records]
    finally:
        close()
