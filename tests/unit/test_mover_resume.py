"""What a move left half way becomes, by the state its journal reached: rolled back before the
hand-over, finished after it (the steps themselves run against real PostgreSQL and ZooKeeper in
tests/integration/test_slot_moves.py)."""

from __future__ import annotations

from typing import Any

import pytest

from services.moves import journal as j
from services.moves.mover import SlotMover
from services.storage.slot_copy import SlotRange
from tests.unit.fake_zookeeper import FakeZooKeeper, Tree


class RecordingMover(SlotMover):
    """The mover with each step replaced by a note of it, moving the journal state as the real
    step does."""

    def __init__(self, zk: FakeZooKeeper | None = None, name: str = "") -> None:
        super().__init__(zk or FakeZooKeeper(Tree()), lambda shard: "", name=name)  # type: ignore[arg-type]
        self.steps: list[str] = []

    def _roll_back(self, record: dict[str, Any], slot_range: SlotRange, why: str) -> None:
        self.steps.append("roll_back")
        self.journal.update(record, state=j.ROLLED_BACK)

    def _hand_over(self, record: dict[str, Any], slot_range: SlotRange, *args: Any, **kwargs: Any) -> None:
        self.steps.append("hand_over")
        record["state"] = j.TARGET_OWNS

    def _flip(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        self.steps.append("flip")
        self.journal.update(record, state=j.FLIPPED)

    def _clean(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        self.steps.append("clean")
        self.journal.update(record, state=j.DONE)


@pytest.mark.parametrize(
    ("state", "steps", "final"),
    [
        (j.COPYING, ["roll_back"], j.ROLLED_BACK),
        (j.FROZEN, ["roll_back"], j.ROLLED_BACK),
        (j.HANDED_OVER, ["hand_over", "flip", "clean"], j.DONE),
        (j.TARGET_OWNS, ["flip", "clean"], j.DONE),
        (j.FLIPPED, ["clean"], j.DONE),
    ],
)
def test_a_cut_move_is_rolled_back_before_the_hand_over_and_finished_after(
    state: str, steps: list[str], final: str
) -> None:
    mover = RecordingMover()
    record = mover.journal.start(0, 31, 0, 1)
    mover.journal.update(record, state=state)
    assert mover._resume(record)["state"] == final
    assert mover.steps == steps
