"""A node's coordinator and its shard agent against fakes of ZooKeeper and of the members:
who fails over and when, who leads, and what a suspended or lost session does. Tasks run on
the test's thread (`run_due`), so each timing rule is checked in milliseconds."""

from __future__ import annotations

import functools
import threading
from typing import Any

from services.coordinator import liveness
from services.coordinator.phases import NODE_PHASES
from services.coordinator.session import NodeCoordinator
from services.dcs import store
from tests.eventually import eventually
from tests.unit.coordinator_fakes import Ensemble, FakeDcs, FakeMembers, view_of

SHARD = 0
SESSION = {"dc1": 1, "dc2": 2, "dc3": 3}


class Node:
    """One DC's coordinator with what it served, fenced and published written down."""

    def __init__(self, dc: str, ensemble: Ensemble, members: FakeMembers) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.dcs = FakeDcs(ensemble, SESSION[dc])
        self.coordinator = NodeCoordinator(
            view_of(dc),
            serve=lambda shard, epoch: self.events.append(("serve", shard, epoch)),
            unserve=lambda shard: self.events.append(("unserve", shard)),
            fence=lambda fenced: self.events.append(("fence", fenced)),
            dcs=self.dcs,  # type: ignore[arg-type]
            members=members,
        )
        self.coordinator.publish_routes = lambda: self.events.append(("publish",))  # type: ignore[method-assign]
        self.agent = self.coordinator.agents[SHARD]

    def run(self) -> None:
        self.coordinator.run_due()


def bank(leader: str = "dc1") -> tuple[Ensemble, FakeMembers, dict[str, Node]]:
    """Shard 0 led by `leader` at epoch 1, every DC's node up with its member registered."""
    log: list[tuple[Any, ...]] = []
    ensemble, members = Ensemble(log), FakeMembers(log)
    ensemble.route(SHARD, leader, 1)
    for dc in SESSION:
        members.put(SHARD, dc, in_recovery=dc != leader, lsn=100, upstream_dc="" if dc == leader else leader)
    nodes = {dc: Node(dc, ensemble, members) for dc in SESSION}
    for node in nodes.values():
        node.coordinator._on_connected()
        node.run()
    return ensemble, members, nodes


def kill(dc: str, ensemble: Ensemble, members: FakeMembers) -> None:
    """The DC goes: its member stops answering and its session expires."""
    members.members[SHARD, dc].alive = False
    ensemble.expire(SESSION[dc])


def test_the_leader_serves_and_holds_the_leader_znode_after_connecting() -> None:
    ensemble, _members, nodes = bank()
    assert nodes["dc1"].events == [("fence", False), ("serve", SHARD, 1)]
    assert ensemble.leaders[SHARD][0] == SESSION["dc1"]
    assert [e for e in nodes["dc2"].events if e[0] == "serve"] == []
    assert ensemble.members[SHARD] == SESSION


def test_a_lost_leader_is_failed_over_by_a_survivor_that_then_leads() -> None:
    ensemble, members, nodes = bank()
    members.members[SHARD, "dc3"].lsn = 200  # dc3's standby received the most
    kill("dc1", ensemble, members)
    survivor = nodes["dc2"]
    survivor.agent.leader_seen = True
    survivor.agent._on_leader(None)  # the leader znode's watch fires
    survivor.run()
    route, _ = ensemble.routes[SHARD]
    assert (route.leader_dc, route.epoch) == ("dc3", 2)
    assert ("publish",) in survivor.events
    eventually(lambda: len(ensemble.failovers) == 1, 5, "the failover's phases to be recorded")
    record = ensemble.failovers[0]
    assert (record["from"], record["to"], record["epoch"], record["by"]) == ("dc1", "dc3", 2, "dc2")
    assert list(record["ends"]) == list(NODE_PHASES)
    assert sorted(record["ends"].values()) == list(record["ends"].values())  # in order
    nodes["dc3"].agent._on_route(b"")  # the route's watch fires on dc3's node
    nodes["dc3"].run()
    assert ("serve", SHARD, 2) in nodes["dc3"].events
    assert ensemble.leaders[SHARD][0] == SESSION["dc3"]


def test_no_failover_while_the_leader_node_is_alive_without_its_znode() -> None:
    """A restarted leader's node retakes the lead: its member znode says it lives."""
    ensemble, _members, nodes = bank()
    del ensemble.leaders[SHARD]
    nodes["dc2"].agent.leader_seen = True
    nodes["dc2"].agent.elect()
    assert ensemble.routes[SHARD][0].epoch == 1 and ensemble.log == []


def test_a_leader_never_seen_is_waited_for_while_the_cluster_starts() -> None:
    ensemble, members, nodes = bank()
    kill("dc1", ensemble, members)
    nodes["dc2"].agent.elect()
    assert ensemble.routes[SHARD][0].epoch == 1 and ensemble.log == []
    assert nodes["dc2"].agent.worker.pending() == [f"elect-{SHARD}"]


def test_a_survivor_that_cannot_take_the_lock_tries_again_later() -> None:
    ensemble, members, nodes = bank()
    kill("dc1", ensemble, members)
    ensemble.locks[SHARD] = SESSION["dc3"]  # dc3's node is failing over now
    nodes["dc2"].agent.leader_seen = True
    nodes["dc2"].agent.elect()
    assert ensemble.routes[SHARD][0].epoch == 1 and ensemble.log == []
    assert nodes["dc2"].agent.worker.pending() == [f"elect-{SHARD}"]


def test_a_suspended_session_fences_at_once_and_a_lost_one_stops_serving() -> None:
    _ensemble, _members, nodes = bank()
    leader = nodes["dc1"]
    leader.events.clear()
    leader.coordinator._on_state(store.SUSPENDED)
    assert leader.events == [("fence", True)]  # no write is served, the lead is kept for now
    assert leader.agent.serving_epoch == 1
    leader.coordinator._on_state(store.LOST)
    assert leader.events == [("fence", True), ("fence", True), ("unserve", SHARD)]
    assert leader.agent.serving_epoch is None


def test_a_reconnected_leader_leads_again_only_if_it_still_may() -> None:
    ensemble, _members, nodes = bank()
    leader = nodes["dc1"]
    leader.coordinator._on_state(store.LOST)
    ensemble.expire(SESSION["dc1"])
    ensemble.leaders[SHARD] = (99, b"an older session of dc1")  # not expired yet
    leader.events.clear()
    leader.coordinator._on_state(store.CONNECTED)
    leader.run()
    assert leader.events == [("fence", False)]  # unfenced, but not serving: the znode is not ours
    assert f"reconcile-{SHARD}" in leader.agent.worker.pending()
    del ensemble.leaders[SHARD]  # the older session expires
    leader.agent.reconcile()
    assert leader.events[-1] == ("serve", SHARD, 1)


def test_a_leader_steps_down_and_rejoins_when_the_route_names_another_dc() -> None:
    ensemble, members, nodes = bank()
    members.promote(SHARD, "dc2")  # as a failover by another node did
    ensemble.route(SHARD, "dc2", 2)
    old = nodes["dc1"]
    old.agent._on_route(b"")
    old.run()
    assert ("unserve", SHARD) in old.events
    assert SHARD not in ensemble.leaders or ensemble.leaders[SHARD][0] != SESSION["dc1"]
    assert ("rejoin", SHARD, "dc1", "dc2") in ensemble.log


def test_a_leader_whose_node_refuses_is_failed_over_before_its_session_expires(monkeypatch: Any) -> None:
    """Its znodes are still there (ZooKeeper would keep them for the session timeout)."""
    ensemble, members, nodes = bank()
    members.members[SHARD, "dc1"].alive = False
    survivor = nodes["dc2"]
    survivor.agent.leader_alive_at = 1000.0
    monkeypatch.setattr(liveness, "knock", lambda endpoint, timeout_s=0.2: liveness.REFUSED)
    survivor.agent.leader_refused("10.0.0.1:7000")
    route, _ = ensemble.routes[SHARD]
    assert (route.leader_dc, route.epoch) == ("dc2", 2)
    assert "dc1" not in ensemble.members[SHARD]
    assert ("serve", SHARD, 2) in survivor.events and ensemble.leaders[SHARD][0] == SESSION["dc2"]


def test_a_leader_that_answers_again_is_left_alone(monkeypatch: Any) -> None:
    ensemble, _members, nodes = bank()
    monkeypatch.setattr(liveness, "knock", lambda endpoint, timeout_s=0.2: liveness.ALIVE)
    nodes["dc2"].agent.leader_refused("10.0.0.1:7000")
    assert ensemble.routes[SHARD][0].epoch == 1 and ensemble.leaders[SHARD][0] == SESSION["dc1"]
    assert ensemble.members[SHARD]["dc1"] == SESSION["dc1"]


def test_shards_of_a_lost_dc_fail_over_side_by_side(monkeypatch: Any) -> None:
    """Each agent acts on its own worker: a failover stuck in its promotion holds up no other."""
    log: list[tuple[Any, ...]] = []
    ensemble, members = Ensemble(log), FakeMembers(log)
    for shard in (0, 1):
        ensemble.route(shard, "dc1", 1)
        for dc in SESSION:
            members.put(shard, dc, in_recovery=dc != "dc1", lsn=100, upstream_dc="" if dc == "dc1" else "dc1")
            ensemble.members.setdefault(shard, {})[dc] = SESSION[dc]
    stuck = threading.Event()
    promote = members.promote

    def slow_promote(shard: int, dc: str) -> None:
        if shard == 0:
            stuck.wait(timeout=10)
        promote(shard, dc)

    monkeypatch.setattr(members, "promote", slow_promote)
    monkeypatch.setattr(liveness, "knock", lambda endpoint, timeout_s=0.2: liveness.REFUSED)
    coordinator = NodeCoordinator(
        view_of("dc2", shards=2), serve=lambda shard, epoch: None, unserve=lambda shard: None,
        fence=lambda fenced: None, dcs=FakeDcs(ensemble, SESSION["dc2"]), members=members,  # type: ignore[arg-type]
    )  # fmt: skip
    coordinator.publish_routes = lambda: None  # type: ignore[method-assign]
    members.members[0, "dc1"].alive = members.members[1, "dc1"].alive = False
    for agent in coordinator.agents.values():
        agent.worker.start()
        agent.schedule("refused", functools.partial(agent.leader_refused, "10.0.0.1:7000"))
    try:
        eventually(lambda: ensemble.routes[1][0].epoch == 2, 5, "shard 1 to fail over while shard 0 is stuck")
        assert ensemble.routes[0][0].epoch == 1
        stuck.set()
        eventually(lambda: ensemble.routes[0][0].epoch == 2, 5, "shard 0 to fail over once unstuck")
    finally:
        stuck.set()
        for agent in coordinator.agents.values():
            agent.worker.stop()


def test_a_leader_silent_to_one_dc_stays_and_to_every_other_dc_is_failed_over() -> None:
    """A partition between two DCs is not a cut-off DC: the leader keeps its shard until the
    node of every other DC has had no answer from it."""
    ensemble, members, nodes = bank()
    members.members[SHARD, "dc1"].alive = False  # cut off: its standbys stop hearing from it too
    nodes["dc2"].agent.leader_silent("10.0.0.1:7000")
    nodes["dc2"].run()
    assert ensemble.routes[SHARD][0].epoch == 1 and ensemble.suspects[SHARD]["dc2"][1] == "dc1"
    nodes["dc3"].agent.leader_silent("10.0.0.1:7000")
    nodes["dc3"].run()
    route, _ = ensemble.routes[SHARD]
    assert (route.leader_dc, route.epoch) == ("dc3", 2)
    assert "dc3" not in ensemble.suspects[SHARD]  # no suspicion outlives the leader it was about


def test_a_leader_that_answers_again_is_no_longer_suspected() -> None:
    ensemble, _members, nodes = bank()
    nodes["dc2"].agent.leader_silent("10.0.0.1:7000")
    nodes["dc2"].agent.leader_answers()
    nodes["dc3"].agent.leader_silent("10.0.0.1:7000")
    assert ensemble.routes[SHARD][0].epoch == 1 and list(ensemble.suspects[SHARD]) == ["dc3"]
