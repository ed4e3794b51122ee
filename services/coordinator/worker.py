"""The coordinator's one worker: every action of a node's shard agents runs here, in due-time
order, so agents never race each other inside a node. Watches fire in bursts: a task already
waiting under the same key is not queued twice."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = Callable[[], None]
RETRY_S = 0.5  # a task that raised runs again after this long (or at the next watch)


class Worker:
    def __init__(self, name: str = "coordinator", clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: list[tuple[float, int, str, Task]] = []  # a heap by due time
        self._order = itertools.count()
        self._pending: set[str] = set()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def schedule(self, key: str, task: Task, delay_s: float = 0.0) -> None:
        """Queues `task` unless the same key is already waiting."""
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            heapq.heappush(self._tasks, (self._clock() + delay_s, next(self._order), key, task))
            self._lock.notify()

    def pending(self) -> list[str]:
        """The keys waiting, soonest first."""
        with self._lock:
            return [key for _, _, key, _ in sorted(self._tasks)]

    def run_due(self) -> int:
        """Runs every task due now, in order, on the calling thread; returns how many ran."""
        ran = 0
        while (due := self._pop_due()) is not None:
            self._run(*due)
            ran += 1
        return ran

    def _pop_due(self) -> tuple[str, Task] | None:
        with self._lock:
            if not self._tasks or self._tasks[0][0] > self._clock():
                return None
            _, _, key, task = heapq.heappop(self._tasks)
            self._pending.discard(key)
            return key, task

    def _work(self) -> None:
        while (due := self._wait_for_due()) is not None:
            self._run(*due)

    def _wait_for_due(self) -> tuple[str, Task] | None:
        with self._lock:
            while not self._stopping.is_set():
                due = self._pop_due()
                if due is not None:
                    return due
                wait_s = (self._tasks[0][0] - self._clock()) if self._tasks else 1.0
                self._lock.wait(timeout=max(0.0, wait_s))
        return None

    def _run(self, key: str, task: Task) -> None:
        try:
            task()
        except Exception:  # a failed step is retried by the next watch or schedule
            log.exception("event=coordinator_task_failed task=%s", key)
            self.schedule(key, task, delay_s=RETRY_S)
