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
