"""A slot mover killed at each point of its move (copy, catch-up, freeze, flip) while money
moves: its ZooKeeper session, and the movers' lock with it, go with the process, and a
bank-node rolls the move back (killed before the hand-over) or finishes it (after), with no
command given. Every slot ends with one writable owner, the one the slot map names; nothing
acknowledged is lost or booked twice; no client operation fails; the books reconcile."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bankclient import BankClient
from tests.eventually import eventually
from tests.integration.cluster_helpers import (
    Cluster,
    bankctl,
    move_records,
    settled_by_the_nodes,
    shard_owning,
)
from tests.integration.conftest import report
from tests.integration.move_load import Load, customers_in, under_load
from tests.integration.mover_that_dies import POINTS

ROOT = Path(__file__).resolve().parents[2]
SLOTS = (80, 95)  # shard 0 in the default map
STATES = "SELECT slot, state FROM slot_state WHERE slot BETWEEN %s AND %s"
DEBITS = """
SELECT transfer_id FROM postings
WHERE transfer_id = ANY(%s) AND amount < 0 AND account_number NOT LIKE 'SYS:%%'
"""


@pytest.fixture(scope="module")
def accounts(bank_cluster: Cluster) -> list[str]:
    """Accounts in the moving slots, and a few on another shard."""
    with bank_cluster.client(deadline_s=10) as client:
        customers = customers_in(*SLOTS, 8, "killed-m") + customers_in(600, 640, 4, "killed-o")
        numbers = [client.open_account(c, "CNY").account_number for c in customers]
        for number in numbers:
            client.deposit(number, 100_000, "CNY")
    return numbers


def acked(loads: list[Load]) -> int:
    return sum(len(load.acked) for load in loads)


def writable_owners(cluster: Cluster, shards: list[int]) -> dict[int, list[int]]:
    """slot -> the shards that hold it OWNED or FROZEN (one, always, after a move settles)."""
    owners: dict[int, list[int]] = {slot: [] for slot in range(SLOTS[0], SLOTS[1] + 1)}
    for shard in shards:
        for slot, state in cluster.sql(shard, STATES, SLOTS):
            if state in ("OWNED", "FROZEN"):
                owners[slot].append(shard)
    return owners


def raised_groups() -> list[str]:
    """PostgreSQL processes whose scheduling group is raised still: a freeze raises those of both
    shards' walsenders and walreceivers; a mover killed in it cannot set them back, the node
    that settles its move does. (The move's own sessions end with their connections.)"""
    raised = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes()
            level = int((proc / "autogroup").read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            continue
        if title.startswith(b"postgres: ") and level < 0:
            raised.append(title.decode(errors="replace")[:60])
    return raised


@pytest.mark.parametrize("point", POINTS)
def test_a_mover_killed_half_way_leaves_its_move_to_the_nodes(
    bank_cluster: Cluster, accounts: list[str], point: str, pytestconfig: pytest.Config
) -> None:
    shards = sorted(int(s["shard"]) for s in bank_cluster.status()["shards"])
    source = shard_owning(bank_cluster, SLOTS[0])
    target = next(s for s in shards if s != source)
    known = {r["id"] for r in move_records(bank_cluster)}
    clients = [BankClient.from_home(bank_cluster.home, prefer_dc=dc, deadline_s=5) for dc in ("dc1", "dc2")]
    with under_load(clients, accounts) as loads:
        eventually(lambda: acked(loads) >= 20, 30, "transfers before the move")
        died = subprocess.run(
            [sys.executable, "-m", "tests.integration.mover_that_dies", str(bank_cluster.home), point,
             str(SLOTS[0]), str(SLOTS[1]), str(target)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert died.returncode == -signal.SIGKILL, died.stdout[-2000:] + died.stderr[-2000:]
        (record,) = [r for r in move_records(bank_cluster) if r["id"] not in known]
        settled = settled_by_the_nodes(bank_cluster, record["id"], timeout_s=30)
        after = acked(loads)
        eventually(lambda: acked(loads) >= after + 20, 30, "transfers after the move settled")
    expected = target if point == "flip" else source
    failed = [f for load in loads for f in load.failed]
    transfers = {tid for load in loads for tid in load.acked}
    report(
        pytestconfig,
        f"\n[moves] mover killed at {point}: left {record['state']}, {settled['state']} by"
        f" {settled.get('resumed_by')} {settled['finished_at'] - settled['started_at']:.1f} s after it"
        f" started; {len(transfers)} transfers acknowledged, {len(failed)} failed",
    )
    assert settled["state"] == ("done" if point == "flip" else "rolled_back"), settled
    assert str(settled.get("resumed_by", "")).startswith("keeper of node"), settled
    assert failed == [], failed[:5]
    assert writable_owners(bank_cluster, shards) == {s: [expected] for s in range(SLOTS[0], SLOTS[1] + 1)}
    assert raised_groups() == []
    assert shard_owning(bank_cluster, SLOTS[0]) == expected == shard_owning(bank_cluster, SLOTS[1])
    books = bank_cluster.check(wait_s=30)
    assert books["reconciled"] and books["pending_transfers"] == 0, books
    debits: Counter[str] = Counter()
    for shard in shards:
        debits.update(row[0] for row in bank_cluster.sql(shard, DEBITS, (list(transfers),)))
    assert set(debits) == transfers and set(debits.values()) == {1}  # each booked once, on one shard
    if expected != source:  # home again, for the tests after this one
        slots = "-".join(map(str, SLOTS))
        back = bankctl(bank_cluster.home, "move-slots", "--slots", slots, "--to", str(source))
        assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
