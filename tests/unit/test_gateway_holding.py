"""The gateway holds a bounded number of requests per shard while the shard has no leader."""

from __future__ import annotations

import threading
import time
from typing import Any

from services.gateway import forwarder
from services.gateway.forwarder import Forwarder
from tests.eventually import eventually


class NoRouting:
    """A routing client never consulted by the counting under test; it remembers who listens."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def on_change(self, callback: Any) -> None:
        self.listeners.append(callback)


def test_held_requests_per_shard_are_bounded() -> None:
    gate = Forwarder(NoRouting())  # type: ignore[arg-type]
    assert all(gate._hold(7) for _ in range(forwarder.MAX_HELD_PER_SHARD))
    assert not gate._hold(7)  # the next one is refused
    assert gate._hold(8)  # another shard has its own bound


def test_a_request_waiting_to_retry_wakes_when_the_routing_table_changes() -> None:
    routing = NoRouting()
    gate = Forwarder(routing)  # type: ignore[arg-type]
    waited: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        gate._wait_for_route(5.0)
        waited.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    eventually(lambda: gate._table_changed._waiters, 2, "the request to wait")  # type: ignore[attr-defined]
    for listener in routing.listeners:
        listener(object())  # a new table
    waiter.join(timeout=5)
    assert waited and waited[0] < 1.0
