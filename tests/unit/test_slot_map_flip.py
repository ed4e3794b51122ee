"""The flip of a move on the slot map (services/moves/slot_map.py), against the in-memory
ZooKeeper: compare-and-set, read again when someone else changed the map in between."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.dcs import paths
from services.moves import slot_map
from tests.unit.fake_zookeeper import FakeZooKeeper, Tree

THREE = [(0, 340, 0), (341, 681, 1), (682, 1023, 2)]


def _encoded(ranges: list[tuple[int, int, int]]) -> bytes:
    return json.dumps({"ranges": [{"first": a, "last": b, "shard": s} for a, b, s in ranges]}).encode()


def _zk_with(ranges: list[tuple[int, int, int]]) -> FakeZooKeeper:
    zk = FakeZooKeeper(Tree())
    zk.ensure_path(paths.SLOTS)
    zk.set(paths.SLOTS, _encoded(ranges))
    return zk


def test_the_flip_names_the_target_and_a_second_flip_changes_nothing() -> None:
    zk = _zk_with(THREE)
    slot_map.flip(zk, 0, 31, 1, "m1")  # type: ignore[arg-type]
    ranges, version = slot_map.read(zk)  # type: ignore[arg-type]
    assert ranges == [(0, 31, 1), (32, 340, 0), (341, 681, 1), (682, 1023, 2)]
    slot_map.flip(zk, 0, 31, 1, "m1")  # type: ignore[arg-type]
    assert slot_map.read(zk)[1] == version  # type: ignore[arg-type]
    assert slot_map.owner(zk, 0, 31) == 1  # type: ignore[arg-type]


def test_a_conflicting_change_is_read_again_not_overwritten() -> None:
    zk = _zk_with(THREE)
    real_set = zk.set
    raced: list[bool] = []

    def set_after_another_writer(path: str, value: bytes, version: int = -1) -> Any:
        if not raced:  # another move flips slots 682-700 between our read and our set
            raced.append(True)
            real_set(path, _encoded([(0, 340, 0), (341, 700, 1), (701, 1023, 2)]))
        return real_set(path, value, version)

    zk.set = set_after_another_writer  # type: ignore[method-assign]
    slot_map.flip(zk, 0, 31, 1, "m1")  # type: ignore[arg-type]
    assert slot_map.read(zk)[0] == [(0, 31, 1), (32, 340, 0), (341, 700, 1), (701, 1023, 2)]  # type: ignore[arg-type]


def test_slots_of_two_shards_have_no_one_owner() -> None:
    with pytest.raises(ValueError, match="span shards \\[0, 1\\]"):
        slot_map.owner(_zk_with(THREE), 300, 400)  # type: ignore[arg-type]
