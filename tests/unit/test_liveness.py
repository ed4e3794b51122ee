"""Knocking on a leader's port: what counts as refused, and when refusals add up to a loss."""

from __future__ import annotations

import socket

from services.coordinator import liveness


def test_a_listening_port_is_alive_and_a_closed_one_refuses() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        assert liveness.knock(endpoint) == liveness.ALIVE
    assert liveness.knock(endpoint) == liveness.REFUSED  # closed: nothing listens there now


def test_refusals_must_come_in_a_row_from_the_same_endpoint() -> None:
    refusals = liveness.Refusals(needed=2)
    assert not refusals.observe(0, "a:1", liveness.ALIVE)
    assert not refusals.observe(0, "a:1", liveness.REFUSED)
    assert not refusals.observe(0, "a:1", liveness.SILENT)  # a silence resets the count
    assert not refusals.observe(0, "a:1", liveness.REFUSED)
    assert refusals.observe(0, "a:1", liveness.REFUSED)
    assert not refusals.observe(0, "b:1", liveness.REFUSED)  # a new leader starts from nothing
    assert not refusals.observe(1, "a:1", liveness.REFUSED)  # and so does another shard


def test_a_leader_never_seen_alive_is_not_counted_dead() -> None:
    """While the cluster starts, the leading node may simply not listen yet."""
    refusals = liveness.Refusals(needed=2)
    assert not any(refusals.observe(0, "a:1", liveness.REFUSED) for _ in range(10))
    refusals.observe(0, "a:1", liveness.ALIVE)
    assert [refusals.observe(0, "a:1", liveness.REFUSED) for _ in range(2)] == [False, True]


def test_a_leader_silent_long_enough_after_being_seen_alive_is_suspected() -> None:
    silences = liveness.Silences(silent_for_s=0.6)
    assert not silences.observe(0, "a:1", liveness.SILENT, now=0.0)  # never seen alive
    assert not silences.observe(0, "a:1", liveness.SILENT, now=5.0)
    silences.observe(0, "a:1", liveness.ALIVE, now=10.0)
    assert not silences.observe(0, "a:1", liveness.SILENT, now=10.1)
    assert not silences.observe(0, "a:1", liveness.SILENT, now=10.5)
    assert silences.observe(0, "a:1", liveness.SILENT, now=10.75)
    assert not silences.observe(0, "a:1", liveness.ALIVE, now=10.8)  # it answers again
    assert not silences.observe(0, "a:1", liveness.SILENT, now=11.0)


def test_a_leader_is_cut_off_only_when_every_other_dc_suspects_it() -> None:
    dcs = ["dc1", "dc2", "dc3"]
    assert liveness.cut_off("dc1", dcs, ["dc2", "dc3"])
    assert not liveness.cut_off("dc1", dcs, ["dc2"])  # a partition dc1 <-> dc2: dc3 still reaches it
    assert not liveness.cut_off("dc1", dcs, [])
    assert not liveness.cut_off("dc1", ["dc1", "dc2"], ["dc2"])  # one other DC is no majority
