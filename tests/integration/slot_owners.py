"""Who may write each slot, watched while slots move: every shard's primary is asked which
slots it holds OWNED (writable), twice a second. A slot OWNED on two shards in two samples in a
row is a slot writable on both (one sample alone may straddle a hand-over: the source read
before its freeze, the target after it took over)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from services.cluster.check import current_primaries
from services.cluster.pg_group import member_instance
from services.cluster.state import require_state
from services.common.identifiers import NUM_SLOTS

OWNED = "SELECT slot FROM slot_state WHERE state = 'OWNED'"


def owners(home: Path) -> dict[int, list[int]]:
    """slot -> the shards that hold it OWNED now (each shard read once, one after the other)."""
    state = require_state(home)
    found: dict[int, list[int]] = {slot: [] for slot in range(NUM_SLOTS)}
    for shard, dc in current_primaries(state).items():
        conninfo = member_instance(state, shard, dc).conninfo(application_name="test-slot-owners")
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
            for (slot,) in conn.execute(OWNED):
                found[int(slot)].append(shard)
    return found


class OwnersWatch:
    def __init__(self, home: Path, every_s: float = 0.5) -> None:
        self.home, self.every_s = home, every_s
        self.samples = 0
        self.doubly_owned: Counter[int] = Counter()  # slot -> samples in a row that saw two owners
        self.violations: list[tuple[int, list[int]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slot-owners", daemon=True)

    def assert_one_writer(self) -> None:
        """No slot was writable on two shards in any two samples in a row, and enough were taken."""
        assert self.samples > 10, (self.samples, self.errors[:3])
        assert self.violations == [], self.violations[:5]

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._sample()
            except (psycopg.Error, OSError) as err:  # a primary between restarts: the next sample
                self.errors.append(repr(err))

    def _sample(self) -> None:
        now = owners(self.home)
        self.samples += 1
        twice = {slot: shards for slot, shards in now.items() if len(shards) > 1}
        for slot in list(self.doubly_owned):
            if slot not in twice:
                del self.doubly_owned[slot]
        for slot, shards in twice.items():
            self.doubly_owned[slot] += 1
            if self.doubly_owned[slot] == 2:
                self.violations.append((slot, shards))


@contextmanager
def watching_owners(home: Path) -> Iterator[OwnersWatch]:
    watch = OwnersWatch(home)
    watch._thread.start()
    try:
        yield watch
    finally:
        watch._stop.set()
        watch._thread.join(timeout=10)
