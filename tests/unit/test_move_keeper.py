"""The bank's nodes resume a move its mover left: only while no mover holds the lock, only one
node at a time, and a mover that lost its session to them stops at its next step instead of
going on beside them (the steps run against real services in tests/integration/test_slot_moves.py)."""

from __future__ import annotations

import pytest

from services.moves import journal as j
from services.moves.keeper import MoveKeeper, orphaned
from services.moves.mover import SlotMover
from services.storage.slot_copy import SlotRange
from tests.unit.fake_zookeeper import FakeZooKeeper, Tree
from tests.unit.test_mover_resume import RecordingMover

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("state", "flipped_ago_s", "due"),
    [
        (j.COPYING, None, True),
        (j.FROZEN, None, True),
        (j.HANDED_OVER, None, True),
        (j.TARGET_OWNS, None, True),
        (j.FLIPPED, 5.0, False),  # its mover may be moving the next batch; it cleans at its end
        (j.FLIPPED, 61.0, True),
        (j.DONE, None, False),
        (j.ROLLED_BACK, None, False),
    ],
)
def test_what_a_node_resumes_when_no_mover_holds_the_lock(
    state: str, flipped_ago_s: float | None, due: bool
) -> None:
    record = {"id": "m", "state": state, "started_at": NOW - 100}
    if flipped_ago_s is not None:
        record["flipped_at"] = NOW - flipped_ago_s
    assert orphaned(record, NOW) is due


def keeper_on(tree: Tree, name: str) -> tuple[MoveKeeper, RecordingMover]:
    zk = FakeZooKeeper(tree)
    keeper = MoveKeeper(zk, lambda shard: "", name)  # type: ignore[arg-type]
    keeper.mover = RecordingMover(zk, name=f"keeper of {name}")
    return keeper, keeper.mover  # type: ignore[return-value]


def left_frozen(tree: Tree) -> tuple[RecordingMover, dict[str, object]]:
    """A mover that froze slots 0-31 and still holds the lock."""
    mover = RecordingMover(FakeZooKeeper(tree), name="bankctl")
    mover.journal.lock("bankctl")
    record = mover.journal.start(0, 31, 0, 1)
    mover.journal.update(record, state=j.FROZEN)
    return mover, record


def test_no_node_touches_a_move_while_its_mover_holds_the_lock() -> None:
    tree = Tree()
    left_frozen(tree)
    keeper, recording = keeper_on(tree, "node dc1")
    assert keeper.run_once() == [] and recording.steps == []


def test_a_move_whose_mover_died_frozen_is_rolled_back_by_one_node() -> None:
    tree = Tree()
    mover, record = left_frozen(tree)
    assert isinstance(mover.zk, FakeZooKeeper)
    mover.zk.expire()  # the mover's process killed: its session, and the lock with it, go
    first, first_steps = keeper_on(tree, "node dc1")
    second, second_steps = keeper_on(tree, "node dc2")
    (resumed,) = first.run_once()
    assert resumed["id"] == record["id"] and resumed["state"] == j.ROLLED_BACK
    assert resumed["resumed_by"] == "keeper of node dc1" and first_steps.steps == ["roll_back"]
    assert second.run_once() == [] and second_steps.steps == []  # nothing left for the next node
    assert tree.nodes.get(j.LOCK_PATH) is None  # and the lock is free for the next mover


def test_a_node_finishes_a_move_left_after_its_hand_over() -> None:
    tree = Tree()
    mover, _ = left_frozen(tree)
    mover.journal.update(mover.journal.unfinished()[0], state=j.HANDED_OVER)
    mover.journal.unlock()  # it stopped on an error it could not undo, and said so
    keeper, recording = keeper_on(tree, "node dc3")
    (resumed,) = keeper.run_once()
    assert resumed["state"] == j.DONE and recording.steps == ["hand_over", "flip", "clean"]


def test_a_node_waits_while_another_node_holds_the_lock() -> None:
    tree = Tree()
    mover, _ = left_frozen(tree)
    mover.journal.unlock()
    busy, _ = keeper_on(tree, "node dc1")
    busy.mover.journal.lock("keeper of node dc1")
    other, steps = keeper_on(tree, "node dc2")
    assert other.run_once() == [] and steps.steps == []


def test_a_mover_that_lost_its_session_stops_before_handing_over() -> None:
    """The mover's session expired while it verified (a long pause, say); a node rolled the move
    back meanwhile. Back at work with a new session, the mover must not hand the slots over."""
    tree = Tree()
    mover, record = left_frozen(tree)
    assert isinstance(mover.zk, FakeZooKeeper)
    mover.zk.expire()
    keeper, _ = keeper_on(tree, "node dc1")
    keeper.run_once()
    assert not mover.journal.holds_lock()
    with pytest.raises(j.MoveTakenOver):
        mover.journal.update(record, state=j.HANDED_OVER)  # what its next step would write
    with pytest.raises(j.MoveTakenOver, match="lock was lost before the hand-over"):
        SlotMover._hand_over(mover, {**record, "state": j.FROZEN}, SlotRange(0, 31))  # the real step
