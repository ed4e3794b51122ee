"""Concurrent calls that may travel together do: the gateway's single transfers to one shard's
leader, and a client's single transfers to its gateway.

A caller hands its item to `Coalescer.submit` with its deadline and waits. A sender per key
takes whatever has queued (up to `max_batch`) and sends it as one call; a lone item leaves at
once, as a batch of one, so nothing waits for company. Each caller gets its own item's answer.

Deadlines: a caller waits until its own. One still queued then is taken out and told
`NotSent` (it never left); one already sent is told `NoAnswer` (its outcome is unknown here; a
retry under the same request id learns it). A failed send is every item's failure: the
exception is raised in each caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

# send(key, items, latest deadline (time.monotonic())) -> one answer per item, in order
Send = Callable[[Any, list[Any], float], list[Any]]


class NotSent(Exception):
    """The caller's deadline passed while its item was still queued: it was never sent."""


class NoAnswer(Exception):
    """The caller's deadline passed after its item was sent: its outcome is not known here."""


class Closed(Exception):
    """The coalescer was closed before the item was sent: it never left."""


@dataclass(eq=False)
class _Waiting:
    item: Any
    deadline: float  # time.monotonic()
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Lane:
    """The queue of one key and its senders."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    queue: deque[_Waiting] = field(default_factory=deque)
    senders: list[threading.Thread] = field(default_factory=list)


class Coalescer:
    def __init__(self, send: Send, max_batch: int, senders_per_key: int = 1, name: str = "coalesce") -> None:
        if max_batch < 1 or senders_per_key < 1:
            raise ValueError("max_batch and senders_per_key must be at least 1")
        self._send = send
        self.max_batch = max_batch
        self.senders_per_key = senders_per_key
        self.name = name
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, key: Hashable, item: Any, deadline: float) -> Any:
        """`item`'s answer, sent under `key` with whatever else is going; raises NotSent or NoAnswer
        when `deadline` (time.monotonic()) passes first, or what the send raised."""
        waiting = _Waiting(item, deadline)
        lane = self._lane(key)
        with lane.cond:
            if self._closed:
                raise Closed(f"{self.name}: closed; nothing is sent any more")
            lane.queue.append(waiting)
            lane.cond.notify()
        if not waiting.done.wait(max(0.0, deadline - time.monotonic())):
            with lane.cond:
                queued = waiting in lane.queue
                if queued:
                    lane.queue.remove(waiting)
            if queued:
                raise NotSent(f"{self.name}: the deadline passed while waiting for its turn; it was not sent")
            if not waiting.done.is_set():
                raise NoAnswer(f"{self.name}: sent, but no answer came within the deadline")
        if waiting.error is not None:
            raise waiting.error
        return waiting.answer

    def queued(self, key: Hashable) -> int:
        """How many items wait under `key` (not counting those on their way)."""
        lane = self._lanes.get(key)
        if lane is None:
            return 0
        with lane.cond:
            return len(lane.queue)

    def close(self) -> None:
        """Stops the senders once their current call ends; what is still queued is answered
        `Closed` at once (it never left)."""
        self._closed = True
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with lane.cond:
                dropped = list(lane.queue)
                lane.queue.clear()
                lane.cond.notify_all()
            for waiting in dropped:
                waiting.error = Closed(f"{self.name}: closed before it was sent")
                waiting.done.set()

    def _lane(self, key: Hashable) -> _Lane:
        lane = self._lanes.get(key)
        if lane is not None:
            return lane
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = _Lane()
                for number in range(self.senders_per_key):
                    name, args = f"{self.name}-{key}-{number}", (key, lane)
                    sender = threading.Thread(target=self._send_loop, args=args, name=name, daemon=True)
                    lane.senders.append(sender)
                    sender.start()
                self._lanes[key] = lane
            return lane

    def _send_loop(self, key: Hashable, lane: _Lane) -> None:
        while True:
            with lane.cond:
                while not lane.queue and not self._closed:
                    lane.cond.wait()
                if self._closed:
                    return
                batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), self.max_batch))]
            try:
                answers = self._send(key, [w.item for w in batch], max(w.deadline for w in batch))
                for waiting, answer in zip(batch, answers, strict=True):
                    waiting.answer = answer
            except Exception as err:  # every caller learns it; a sender must not die of it
                for waiting in batch:
                    waiting.error = err
            for waiting in batch:
                waiting.done.set()
