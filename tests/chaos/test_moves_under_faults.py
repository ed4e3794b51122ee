"""A slot move cut by the loss of a data center, under load: the source's primary DC killed as
the move copies, catches up or freezes, the target's as it hands over or flips. The mover stops
and lets its lock go (or, past the hand-over with ZooKeeper still whole, finishes); once the
shard is led again a bank-node rolls back a move cut before the hand-over and finishes one cut
after it, with no command given; every slot ends owned by one shard, nothing acknowledged is
lost or booked twice, no client operation fails, the books reconcile. The moved slot goes home
at the end, so the later tests find the slot map they expect."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from services.chaos import faults
from services.cluster import slot_moves
from services.cluster.state import require_state
from services.common.identifiers import slot_of_account, slot_of_routed_id
from services.moves import journal as j
from services.moves.mover import SlotMover
from services.storage import slot_copy, slots
from tests.chaos.helpers import SHARDS, Load, leader_of, shard_of, wait_for_progress
from tests.integration.cluster_helpers import Cluster, bankctl, settled_by_the_nodes
from tests.integration.conftest import report

SOURCE = 0


def owners(cluster: Cluster, slot: int) -> dict[int, str]:
    """Each shard's recorded state of `slot` (on its current primary)."""
    found = {}
    for shard in range(SHARDS):
        rows = cluster.sql(shard, "SELECT state FROM slot_state WHERE slot = %s", (slot,))
        if rows:
            found[shard] = str(rows[0][0])
    return found


def slot_map(cluster: Cluster) -> dict[int, int]:
    """slot -> the shard the slot map names, as `status` shows it."""
    return {
        slot: int(shard["shard"])
        for shard in cluster.status()["shards"]
        for first, last in shard["slots"]
        for slot in range(first, last + 1)
    }


def booked_once_where_they_live(cluster: Cluster, load: Load) -> None:
    """Every acknowledged transfer has one row and one debit on the shard that owns its slot now."""
    owner = slot_map(cluster)
    by_shard: dict[int, list[str]] = {}
    for transfer_id in load.acked.values():
        by_shard.setdefault(owner[slot_of_routed_id(transfer_id)], []).append(transfer_id)
    for shard, ids in by_shard.items():
        rows = dict(
            cluster.sql(
                shard,
                "SELECT transfer_id, count(*) FROM transfers WHERE transfer_id = ANY(%s) GROUP BY 1",
                (ids,),
            )
        )
        assert all(rows.get(t) == 1 for t in ids), [t for t in ids if rows.get(t) != 1][:10]


def cut_move(
    cluster: Cluster, slot: int, target: int, arm: Callable[[SlotMover], list[str]]
) -> tuple[dict[str, Any], str]:
    """Moves `slot` from SOURCE to `target` in this process with a DC kill armed inside it; returns
    the move's journal record as the mover left it, and the error it stopped with (if any)."""
    mover, close = slot_moves.mover(require_state(cluster.home), lambda line: None)
    error = ""
    try:
        struck = arm(mover)
        try:
            mover.move(slot, slot, target)
        except Exception as err:  # whatever the lost DC makes of the step it was in
            error = f"{type(err).__name__}: {err}"
        assert struck, "the DC was not killed: the move never reached the point armed"
        return next(r for r in reversed(mover.journal.all()) if r["slots"] == [slot, slot]), error
    finally:
        close()


def kill_dc_in(
    cluster: Cluster, dc: str, owner: Any, name: str, wanted: Callable[..., bool]
) -> Callable[[SlotMover], list[str]]:
    """Arms a kill of `dc` at the first call of `owner.name` (the mover's own method when
    `owner` is None) whose arguments `wanted` takes; the kill returns once every shard is led
    again. Undone by `restore`."""

    def arm(mover: SlotMover) -> list[str]:
        target = owner or mover
        original = getattr(target, name)
        struck: list[str] = []

        def strike(*args: Any, **kwargs: Any) -> Any:
            if not struck and wanted(*args, **kwargs):
                struck.append(dc)
                faults.inject(require_state(cluster.home), "kill-dc", {"dc": dc}, lambda line: None)
            return original(*args, **kwargs)

        setattr(target, name, strike)
        if owner is not None:
            restore.append(lambda: setattr(owner, name, original))
        return struck

    return arm


restore: list[Callable[[], None]] = []


def kill_dc_at(cluster: Cluster, dc: str, point: str) -> Callable[[SlotMover], list[str]]:
    """Arms a kill of `dc` as the mover reaches `point` (its `at` hook, as `chaos run` cuts a
    move); the kill does not wait for the shards to be led again: the move goes on meanwhile."""

    def arm(mover: SlotMover) -> list[str]:
        struck: list[str] = []

        def strike(reached: str) -> None:
            if reached == point and not struck:
                struck.append(dc)
                faults.strike(require_state(cluster.home), "kill-dc", {"dc": dc}, lambda line: None)

        mover.at = strike
        return struck

    return arm


def in_catch_up(*args: Any, **kwargs: Any) -> bool:
    return args[3] is not None  # copy_pass(source, target, slots, since): the first pass has none


def target_taking_over(*args: Any, **kwargs: Any) -> bool:
    return bool(args[3] == slots.OWNED)  # _half(record, slot_range, conn, state, ...)


# (whose DC is lost, at which point); the first two by a hook inside the step (the source's
# connections open in the catch-up pass; the journal past the hand-over, the target not yet
# owning), the others where the mover says it has reached the point.
# A cut as the source copies is left to the seeded chaos runs (their move-slots steps kill a DC
# at a drawn point, the copy among them) and to test_mover_killed[copy]: it rolls back as a
# cut in the catch-up does, and the suite's 30 minutes had run out.
CUTS = [("source", "catch_up"), ("target", "hand_over"), ("source", "freeze"), ("target", "flip")]


@pytest.mark.parametrize(("lost", "point"), CUTS, ids=[f"{lost}-{point}" for lost, point in CUTS])
def test_a_move_cut_by_a_lost_dc_ends_with_one_owner_and_nothing_lost(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config, lost: str, point: str
) -> None:
    slot = slot_of_account(next(a for a in accounts if shard_of(a) == SOURCE))
    target = 1  # led from another DC than the source (earlier faults may have moved leaders)
    if leader_of(cluster, target) == leader_of(cluster, SOURCE):
        to_dc = next(d for d in cluster.status()["dcs"] if d != leader_of(cluster, SOURCE))
        switched = bankctl(cluster.home, "switchover", str(target), "--to", to_dc, timeout_s=120)
        assert switched.returncode == 0, switched.stdout[-2000:] + switched.stderr[-2000:]
    dc = leader_of(cluster, SOURCE if lost == "source" else target)
    load = Load(cluster, accounts)
    load.run()
    started = time.monotonic()
    try:
        wait_for_progress(load, 50)
        if point == "catch_up":  # its connections open in the catch-up pass, before anything is frozen
            arm = kill_dc_in(cluster, dc, slot_copy, "copy_pass", in_catch_up)
        elif point == "hand_over":  # the journal is past the hand-over; the target has not taken it yet
            arm = kill_dc_in(cluster, dc, None, "_half", target_taking_over)
        else:
            arm = kill_dc_at(cluster, dc, point)
        try:
            record, error = cut_move(cluster, slot, target, arm)
        finally:
            while restore:
                restore.pop()()
        left = record["state"]
        if point == "hand_over":
            assert left == j.HANDED_OVER and error, (record, error)
        if point in ("copy", "catch_up", "freeze"):  # before the hand-over: only ever rolled back
            assert left != j.DONE, (record, error)
        if left not in (j.DONE, j.ROLLED_BACK):
            record = settled_by_the_nodes(cluster, record["id"], timeout_s=60)
            assert str(record.get("resumed_by", "")).startswith("keeper of node"), record
        assert record["state"] in (j.DONE, j.ROLLED_BACK), record
        expected_owner = target if record["state"] == j.DONE else SOURCE
        wait_for_progress(load, 50)
        restarted = bankctl(cluster.home, "chaos", "restart-dc", dc, timeout_s=180)
        assert restarted.returncode == 0, restarted.stdout[-2000:] + restarted.stderr[-2000:]
        wait_for_progress(load, 50)
    finally:
        load.finish()
    report(
        pytestconfig,
        f"\n[chaos] move of slot {slot} cut by losing the {lost}'s DC {dc} at {point}: left {left}"
        f" ({error[:80] or 'no error'}), then {record['state']} in {time.monotonic() - started:.0f} s;"
        f" {len(load.acked)} acknowledged, {len(load.failed)} failed",
    )
    assert load.failed == {}, list(load.failed.items())[:5]
    states = owners(cluster, slot)
    writable = [s for s, state in states.items() if state in ("OWNED", "FROZEN")]
    assert writable == [expected_owner] and states[expected_owner] == "OWNED", states
    assert slot_map(cluster)[slot] == expected_owner
    books = cluster.check(wait_s=60)
    assert books["reconciled"] and books["pending_transfers"] == 0, books
    booked_once_where_they_live(cluster, load)
    if expected_owner != SOURCE:  # home again, for the tests after this one
        back = bankctl(
            cluster.home, "move-slots", "--slots", f"{slot}-{slot}", "--to", str(SOURCE), timeout_s=120
        )
        assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
