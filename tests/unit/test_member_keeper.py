"""What a PostgreSQL member's keeper does when its container starts (the real keeper runs in the
compose tier; this is its decision alone, for every case of data and route)."""

from __future__ import annotations

import pytest

from services.container.member_keeper import CLONE, FOLLOW, INIT_PRIMARY, REJOIN, START, boot_plan
from services.host.processes import LaunchError


@pytest.mark.parametrize(
    ("dc", "leader_dc", "has_data", "was_standby", "plan"),
    [
        ("dc1", None, False, False, INIT_PRIMARY),  # a new cluster: the first primary is made
        ("dc2", None, False, False, CLONE),  # a new cluster: the others clone it
        ("dc2", "dc1", False, False, CLONE),  # a member whose volume is new clones the leader
        ("dc1", "dc1", True, False, START),  # the leader's member starts as it is
        ("dc1", None, True, False, START),  # a cluster whose routes are not written yet
        ("dc2", "dc1", True, True, FOLLOW),  # a standby follows the leader, no rewind
        ("dc1", "dc2", True, False, REJOIN),  # a former primary (the DC was lost) is rewound
        ("dc3", "dc2", True, False, REJOIN),  # a standby promoted and then deposed, likewise
    ],
)
def test_boot_plan(dc: str, leader_dc: str | None, has_data: bool, was_standby: bool, plan: str) -> None:
    assert boot_plan(dc, "dc1", leader_dc, has_data, was_standby) == plan


def test_a_leader_without_data_is_refused_not_made_anew() -> None:
    """Making a new primary there would start an empty shard under the route of a full one."""
    with pytest.raises(LaunchError, match="no data"):
        boot_plan("dc2", "dc1", "dc2", has_data=False, was_standby=False)
    assert boot_plan("dc2", "dc1", "dc1", has_data=False, was_standby=False) == CLONE
