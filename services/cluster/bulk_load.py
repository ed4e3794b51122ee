"""`bankctl load-accounts`: many funded accounts, written straight into every shard's primary.

The account numbers go to `<home>/accounts.csv` (account,shard,slot), which the load harness
reads. Shown as progress: accounts are written in batches, shard by shard.

The rows are written by COPY, past the slot fence of the bank's own writes; so a load holds the
movers' lock throughout (no slot moves meanwhile) and refuses to start while a move is left
half way.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from services.cluster.check import current_primaries, current_shard_of_slot
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.common.identifiers import slot_of_customer
from services.common.money import validate_amount_minor, validate_currency
from services.moves import journal as j
from services.storage.bulk import NewAccount, load_accounts

BATCH = 20_000
ACCOUNTS_FILE = "accounts.csv"


def bulk_load(
    state: ClusterState, count: int, opening_minor: int, currency: str, say: Callable[[str], None],
    wait_s: float = 30.0,
) -> Path:  # fmt: skip
    validate_currency(currency)
    validate_amount_minor(opening_minor, "balance")
    if not 1 <= count <= 10_000_000:
        raise ValueError(f"--count must be 1..10,000,000, not {count}")
    with zk_client(state, timeout_s=10) as dcs:
        journal = j.Journal(dcs.client)
        _lock_settled(journal, wait_s, say)
        try:
            return _load(state, count, opening_minor, currency, say, journal)
        finally:
            journal.unlock()


def _lock_settled(journal: j.Journal, wait_s: float, say: Callable[[str], None]) -> None:
    """The movers' lock, taken when no move is left half way (the COPY passes the slot fence).
    A move left half way is settled by the bank's nodes once the lock is free: waited for, up to
    `wait_s` in all; MoverBusy after that."""
    give_up = time.monotonic() + wait_s
    while True:
        journal.lock(f"bankctl load-accounts pid {os.getpid()}", max(0.0, give_up - time.monotonic()))
        half_way = [r["id"] for r in journal.unfinished() if r["state"] != j.FLIPPED]
        if not half_way:
            return
        journal.unlock()
        if time.monotonic() >= give_up:
            raise j.MoverBusy(
                f"move {half_way[0]} was left half way and the bank's nodes did not settle it within"
                f" {wait_s:g} s (see bankctl status); try again once they have"
            )
        say(f"waiting for move {half_way[0]}, left half way, to be settled by the bank's nodes")
        time.sleep(0.5)


def _load(
    state: ClusterState, count: int, opening_minor: int, currency: str, say: Callable[[str], None],
    journal: j.Journal,
) -> Path:  # fmt: skip
    run = uuid.uuid4().hex[:6]
    by_shard: dict[int, list[NewAccount]] = {s: [] for s in state.active_shards}
    owner = current_shard_of_slot(state)  # the map as it is now: slots may have moved
    for i in range(count):
        customer = f"c{run}-{i}"
        slot = slot_of_customer(customer)
        by_shard[owner[slot]].append(NewAccount(customer, slot))
    primaries = current_primaries(state)
    path = state.home / ACCOUNTS_FILE
    started, done = time.monotonic(), 0
    with open(path, "a", encoding="ascii") as out:
        for shard, accounts in by_shard.items():
            conninfo = member_instance(state, shard, primaries[shard]).conninfo(
                application_name="bankctl-load"
            )
            for first in range(0, len(accounts), BATCH):
                batch = accounts[first : first + BATCH]
                numbers = load_accounts(conninfo, batch, currency, opening_minor)
                out.writelines(f"{n},{shard},{a.slot}\n" for n, a in zip(numbers, batch, strict=True))
                done += len(batch)
                rate = done / max(time.monotonic() - started, 1e-6)
                say(f"loaded {done:,}/{count:,} accounts ({100 * done // count}%), {rate:,.0f}/s")
    return path
