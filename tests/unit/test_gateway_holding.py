"""The gateway holds a bounded number of requests per shard while the shard has no leader."""

from __future__ import annotations

from services.gateway import forwarder
from services.gateway.forwarder import Forwarder


class NoRouting:
    """A routing client never consulted by the counting under test."""


def test_held_requests_per_shard_are_bounded() -> None:
    gate = Forwarder(NoRouting())  # type: ignore[arg-type]
    assert all(gate._hold(7) for _ in range(forwarder.MAX_HELD_PER_SHARD))
    assert not gate._hold(7)  # the next one is refused
    assert gate._hold(8)  # another shard has its own bound
