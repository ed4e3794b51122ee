"""`fail_over` against fakes: which member it promotes, in what order it acts, and how a
failover cut short after its choice is finished with the member it chose."""

from __future__ import annotations

from typing import Any

from services.coordinator.failover import fail_over
from tests.unit.coordinator_fakes import Ensemble, FakeDcs, FakeMembers, view_of

SHARD = 0


def cluster(positions: dict[str, int], chosen: tuple[int, str] | None = None) -> tuple[Ensemble, FakeMembers]:
    """Shard 0 led by dc1 at epoch 1, whose node is gone; standbys in the other DCs received
    the WAL `positions` say (a DC left out has no live member)."""
    log: list[tuple[Any, ...]] = []
    ensemble, members = Ensemble(log), FakeMembers(log)
    ensemble.route(SHARD, "dc1", 1)
    members.put(SHARD, "dc1", in_recovery=False, lsn=max(positions.values(), default=0), alive=False)
    for session, (dc, lsn) in enumerate(positions.items(), start=2):
        members.put(SHARD, dc, in_recovery=True, lsn=lsn, upstream_dc="dc1")
        ensemble.members.setdefault(SHARD, {})[dc] = session
    if chosen is not None:
        ensemble.chosen[SHARD] = chosen
    return ensemble, members


def test_the_standby_that_received_most_is_promoted_after_every_standby_is_detached() -> None:
    ensemble, members = cluster({"dc2": 100, "dc3": 250})
    route = fail_over(FakeDcs(ensemble, 2), members, view_of("dc2"), SHARD)
    assert route is not None and (route.leader_dc, route.epoch) == ("dc3", 2)
    assert route.endpoint == "10.0.0.3:7000"
    steps = [entry[0] for entry in ensemble.log]
    # Both detached before anything is chosen: the old primary can acknowledge nothing more.
    assert steps == ["detach", "detach", "choice", "promote", "follow", "route"]
    assert ("promote", SHARD, "dc3") in ensemble.log and ("follow", SHARD, "dc2", "dc3") in ensemble.log
    assert ensemble.routes[SHARD][0] == route
    assert SHARD not in ensemble.chosen  # the choice is cleared once the route names it


def test_a_tie_goes_to_the_standby_of_the_failing_over_node() -> None:
    ensemble, members = cluster({"dc2": 300, "dc3": 300})
    route = fail_over(FakeDcs(ensemble, 3), members, view_of("dc3"), SHARD)
    assert route is not None and route.leader_dc == "dc3"


def test_no_live_standby_means_no_failover_and_no_change() -> None:
    ensemble, members = cluster({})
    assert fail_over(FakeDcs(ensemble, 2), members, view_of("dc2"), SHARD) is None
    assert ensemble.routes[SHARD][0].leader_dc == "dc1" and ensemble.log == []


def test_a_failover_cut_after_its_promotion_is_finished_with_the_member_it_chose() -> None:
    """dc2 was chosen and promoted, then the failing-over node died before writing the route.
    dc3 received more WAL since (it streams from nobody now, but its position may be stale or
    hold commits of the old primary that were never acknowledged): choosing again would
    promote a second primary."""
    ensemble, members = cluster({"dc2": 100, "dc3": 900}, chosen=(1, "dc2"))
    members.promote(SHARD, "dc2")
    ensemble.log.clear()
    route = fail_over(FakeDcs(ensemble, 3), members, view_of("dc3"), SHARD)
    assert route is not None and (route.leader_dc, route.epoch) == ("dc2", 2)
    assert [e for e in ensemble.log if e[0] in ("detach", "promote", "choice")] == []
    assert ("slots", SHARD, "dc2") in ensemble.log and ("follow", SHARD, "dc3", "dc2") in ensemble.log


def test_a_choice_left_from_an_older_route_is_not_followed() -> None:
    ensemble, members = cluster({"dc2": 100, "dc3": 250}, chosen=(0, "dc2"))
    route = fail_over(FakeDcs(ensemble, 2), members, view_of("dc2"), SHARD)
    assert route is not None and route.leader_dc == "dc3"
