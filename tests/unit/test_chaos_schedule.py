"""Seeded schedules are reproducible, and the checker names what it finds."""

from __future__ import annotations

import pytest

from services.chaos.checker import Ledger, per_transfer
from services.chaos.schedule import MOVE_CUTS, NEEDS_NETNS, SECOND_FAULTS, draw, scripted
from services.chaos.workload import Op
from services.common.identifiers import NUM_SLOTS
from services.moves.mover import POINTS

DCS = ["dc1", "dc2", "dc3"]


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another() -> None:
    assert draw(7, DCS, "netns") == draw(7, DCS, "netns")
    assert draw(7, DCS, "netns") != draw(8, DCS, "netns")


def test_schedules_keep_a_majority_and_respect_the_network() -> None:
    for seed in range(50):
        for step in draw(seed, DCS, "loopback", steps=20):
            assert not {f.fault for f in step.faults} & NEEDS_NETNS
            assert 1 <= len(step.faults) <= 2
            assert all(f.fault in SECOND_FAULTS for f in step.faults[1:])
            assert 2.0 <= step.hold_s <= 8.0
            for fault in step.faults:
                assert fault.args.get("dc", "dc1") in DCS
                if "other" in fault.args:
                    assert fault.args["other"] in DCS and fault.args["other"] != fault.args["dc"]


def test_a_compose_cluster_is_isolated_but_never_partitioned() -> None:
    drawn = {
        f.fault for seed in range(50) for step in draw(seed, DCS, "compose", steps=20) for f in step.faults
    }
    assert "isolate-dc" in drawn and "partition" not in drawn


def _ops() -> dict[str, Op]:
    return {
        "r1": Op("r1", "A", "B", 10, outcome="ok", transfer_id="T1"),
        "r2": Op("r2", "B", "C", 20, outcome="ok", transfer_id="T2"),
        "r3": Op("r3", "C", "A", 30, outcome="fail", code="FAILED_PRECONDITION"),
        "r4": Op("r4", "A", "C", 40, outcome="info", code="DEADLINE_EXCEEDED"),
    }


def test_a_clean_ledger_has_no_anomaly_and_an_unanswered_transfer_may_be_booked() -> None:
    ledger = Ledger()
    ledger.movements.update(
        {"T1": [("A", -10), ("B", 10)], "T2": [("B", -20), ("C", 20)], "T4": [("A", -40), ("C", 40)]}
    )
    ledger.requests.update({"T1": "r1", "T2": "r2", "T4": "r4"})
    assert per_transfer(_ops(), ledger) == []


def test_lost_doubled_refused_and_unknown_transfers_are_named() -> None:
    ledger = Ledger()
    ledger.movements.update(
        {
            "T2": [("B", -20), ("C", 20), ("C", 20)],  # credited twice
            "T3": [("C", -30), ("A", 30)],  # refused, yet booked
            "T9": [("A", -5), ("B", 5)],  # nobody asked for it
        }
    )
    ledger.requests.update({"T2": "r2", "T3": "r3"})
    found = {a["kind"]: a["transfer_ids"] for a in per_transfer(_ops(), ledger)}
    assert found == {
        "lost": ["T1"],
        "applied-twice": ["T2"],
        "refused-but-applied": ["T3"],
        "never-requested": ["T9"],
    }


def test_a_transfer_booked_with_another_amount_is_half_applied() -> None:
    ledger = Ledger()
    ledger.movements.update({"T1": [("A", -10)], "T2": [("B", -20), ("C", 19)]})
    found = {a["kind"]: a["transfer_ids"] for a in per_transfer(_ops(), ledger)}
    assert found == {"half-applied": ["T1", "T2"]}


def test_move_steps_name_a_slot_and_a_cut_and_strike_nothing_beside() -> None:
    moves = [
        step
        for seed in range(50)
        for step in draw(seed, DCS, "netns", steps=20)
        if step.faults[0].fault == "move-slots"
    ]
    assert moves, "no seed of 50 drew a move step"
    assert {step.faults[0].args["cut"] for step in moves} == set(MOVE_CUTS)
    for step in moves:
        (fault,) = step.faults
        assert 0 <= fault.args["slot"] < NUM_SLOTS
        if fault.args["cut"] in ("kill-source-dc", "kill-target-dc"):
            assert fault.args["at"] in POINTS
        if fault.args["cut"] == "kill-mover":
            assert 0.3 <= fault.args["after_s"] <= 3.0


def test_a_written_schedule_is_run_as_written_what_it_leaves_out_drawn() -> None:
    texts = [
        "move-slots cut=kill-source-dc at=freeze",
        "kill-dc dc2",
        "slow-link dc1 dc3 delay_ms=50",
        "move-slots slot=30 cut=kill-mover",
        "pause-node dc1 seconds=2.5",
        "move-slots cut=none",
    ]
    steps = scripted(4, texts, DCS, "netns")
    assert steps == scripted(4, texts, DCS, "netns")
    assert [s.index for s in steps] == list(range(6)) and all(len(s.faults) == 1 for s in steps)
    first, kill, slow, mover, pause, alone = (s.faults[0] for s in steps)
    assert (first.fault, first.args["cut"], first.args["at"]) == ("move-slots", "kill-source-dc", "freeze")
    assert 0 <= first.args["slot"] < NUM_SLOTS and "after_s" not in first.args
    assert kill.args == {"dc": "dc2"}
    assert slow.args == {"dc": "dc1", "other": "dc3", "delay_ms": 50}
    assert mover.args["slot"] == 30 and 0.3 <= mover.args["after_s"] <= 3.0 and "at" not in mover.args
    assert pause.args == {"dc": "dc1", "seconds": 2.5} and steps[4].hold_s == 2.5
    assert alone.args.keys() == {"slot", "cut"}
    assert first.describe().startswith("move-slots slot=") and "at=freeze" in first.describe()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "the fault must be one of"),
        ("kill-everything", "the fault must be one of"),
        ("kill-dc dc9", "dc must be one of dc1, dc2, dc3"),
        ("kill-dc dc1 dc2", "one word too many"),
        ("partition dc1 dc1", "the two DCs must differ"),
        ("isolate-dc dc1", "needs a cluster started with --net netns"),
        ("move-slots cut=kill-everyone", "cut must be one of none"),
        ("move-slots cut=kill-source-dc at=lunch", "at must be one of copy"),
        ("move-slots cut=none at=flip", "at needs another cut"),
        ("move-slots slot=1024", "slot=1024 is out of range"),
        ("move-slots slot=ten", "slot must be a number"),
        ("kill-dc dc1 seconds=3", "kill-dc takes no 'seconds'"),
        ("pause-node dc1 seconds=0", "seconds=0 is out of range"),
    ],
)
def test_a_step_that_cannot_be_struck_is_refused_with_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace(".", "\\.")):
        scripted(1, [text], DCS, "loopback" if text.startswith("isolate") else "netns")
