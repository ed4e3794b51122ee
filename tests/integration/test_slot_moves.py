"""Moving slots between shards while money moves: `bankctl move-slots` copies, freezes, verifies
and flips; nothing acknowledged is lost or doubled, no client operation fails, the books
reconcile, a moved account's statement is complete on its new shard, a retry answered before
the move gets the same answer after it, and account numbers stay unique."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from bank.v1 import ledger_pb2
from bankclient import BankClient
from services.cluster import slot_moves
from services.cluster.state import require_state
from services.common.identifiers import slot_of_account
from services.moves.mover import MoveFailed, SlotMover
from services.storage import slots
from services.storage.slot_copy import SlotRange
from tests.integration.cluster_helpers import (
    Cluster,
    bankctl,
    move_record,
    printed_json,
    settled_by_the_nodes,
    shard_owning,
)
from tests.integration.conftest import report
from tests.integration.move_load import customers_in, under_load
from tests.integration.slot_owners import owners, watching_owners

MOVING = (0, 31)  # on shard 0 in the default map
SLOTS = f"{MOVING[0]}-{MOVING[1]}"
STAYING_SLOT = 200  # shard 0 too
OTHER_SHARD_SLOT = 500  # shard 1


# The debits (credits) of customer accounts in slots a shard holds (a moved slot's rows are gone
# by then): a cross-shard transfer's credit is booked on its target's shard by the relay.
DEBITS = """
SELECT transfer_id FROM postings
WHERE transfer_id = ANY(%s) AND amount < 0 AND account_number NOT LIKE 'SYS:%%'
"""
CREDITS = DEBITS.replace("amount < 0", "amount > 0")
STATES = "SELECT state, count(*) FROM slot_state WHERE slot BETWEEN %s AND %s GROUP BY 1"
LEFT = "SELECT count(*) FROM accounts WHERE slot BETWEEN %s AND %s"


def statement(client: BankClient, account: str) -> list[Any]:
    lines: list[Any] = []
    token = ""
    while True:
        page = client.call(
            "ledger", "ListPostings",
            ledger_pb2.ListPostingsRequest(account_number=account, page_token=token, page_size=100),
        )  # fmt: skip
        lines += list(page.postings)
        token = page.next_page_token
        if not token:
            return lines


@pytest.fixture(scope="module")
def accounts(bank_cluster: Cluster) -> dict[str, list[str]]:
    with bank_cluster.client(deadline_s=10) as client:
        made = {
            "moving": customers_in(*MOVING, 12, "mover-m"),
            "staying": customers_in(STAYING_SLOT, STAYING_SLOT + 20, 4, "mover-s"),
            "other": customers_in(OTHER_SHARD_SLOT, OTHER_SHARD_SLOT + 20, 4, "mover-o"),
        }
        numbers: dict[str, list[str]] = {}
        for group, customers in made.items():
            numbers[group] = [client.open_account(c, "CNY").account_number for c in customers]
            for number in numbers[group]:
                client.deposit(number, 100_000, "CNY")
    return numbers


def test_moving_slots_under_load_loses_doubles_and_fails_nothing(
    bank_cluster: Cluster, accounts: dict[str, list[str]], pytestconfig: pytest.Config
) -> None:
    everyone = [a for group in accounts.values() for a in group]
    assert shard_owning(bank_cluster, MOVING[0]) == 0
    with bank_cluster.client(deadline_s=10) as client:
        answered_before = client.transfer(
            accounts["moving"][0], accounts["other"][0], 123, "CNY", request_id="move-retry-1"
        )
        # The third client coalesces its transfers into batches (CreateTransfers): both paths move.
        clients = [
            BankClient.from_home(
                bank_cluster.home, prefer_dc=dc, deadline_s=5, coalesce_transfers=dc == "dc3"
            )
            for dc in ("dc1", "dc2", "dc3")
        ]
        with under_load(clients, everyone) as loads:
            time.sleep(2)
            started = time.monotonic()
            done = bankctl(bank_cluster.home, "move-slots", "--slots", SLOTS, "--to", "1", "--json")
            took = time.monotonic() - started
            time.sleep(2)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        record = printed_json(done.stdout)
        acked = {tid: t for load in loads for tid, t in load.acked.items()}
        failed = [f for load in loads for f in load.failed]
        report(
            pytestconfig,
            f"\n[moves] slots {SLOTS} 0 -> 1 in {took:.1f} s: freeze {record['freeze_ms']} ms"
            f" {record['freeze_phases_ms']},"
            f" {record['copied_rows']} rows; {len(acked)} transfers acknowledged, {len(failed)} failed",
        )
        assert record["state"] == "done" and record["freeze_ms"] < 2000, record
        assert failed == [], failed[:5]
        assert len(acked) > 50
        assert shard_owning(bank_cluster, MOVING[0]) == 1 and shard_owning(bank_cluster, MOVING[1]) == 1

        books = bank_cluster.check(wait_s=30)
        assert books["reconciled"] and books["pending_transfers"] == 0, books
        # Every acknowledged transfer is booked once, with its amount on its two accounts.
        for tid in random.Random(1).sample(sorted(acked), min(60, len(acked))):
            transfer = client.get_transfer(tid)
            assert transfer.status == ledger_pb2.TRANSFER_STATUS_COMMITTED
            assert (transfer.from_account, transfer.to_account, transfer.amount) == acked[tid]
        # A moved account's statement is complete and in order on its new shard.
        for account in accounts["moving"]:
            lines = statement(client, account)
            balance = client.get_account(account).balance
            assert sum(line.amount for line in lines) == balance
            assert lines[-1].balance_after == balance
            running = 0
            for line in lines:
                running += line.amount
                assert line.balance_after == running
        # A retry of a request answered before the move gets the same answer after it.
        again = client.transfer(
            accounts["moving"][0], accounts["other"][0], 123, "CNY", request_id="move-retry-1"
        )
        assert again.transfer_id == answered_before.transfer_id
        # Account numbers stay unique: a new account in a moved slot continues its slot's serials.
        newcomer = client.open_account(customers_in(*MOVING, 1, "mover-late")[0], "CNY").account_number
        assert newcomer not in everyone and shard_owning(bank_cluster, slot_of_account(newcomer)) == 1
    debits: Counter[str] = Counter()
    for shard in range(3):
        debits.update(r[0] for r in bank_cluster.sql(shard, DEBITS, (list(acked),)))
    assert set(debits) == set(acked) and set(debits.values()) == {1}  # each booked once, on one shard
    # Each credited once too: those to or from a moving slot by another shard's relay included.
    credits: Counter[str] = Counter()
    for shard in range(3):
        credits.update(r[0] for r in bank_cluster.sql(shard, CREDITS, (list(acked),)))
    assert set(credits) == set(acked) and set(credits.values()) == {1}
    crossing = [t for t, (a, b, _) in acked.items() if (a in accounts["moving"]) != (b in accounts["moving"])]
    assert len(crossing) > 10  # transfers to and from the moving slots, across shards, were tested
    states = dict(bank_cluster.sql(0, STATES, MOVING))
    assert states == {"GONE": 32}
    left = bank_cluster.sql(0, LEFT, MOVING)
    assert left == [(0,)]  # removed from the source after the grace period


def test_moving_the_slots_back_restores_the_map_and_the_books(bank_cluster: Cluster) -> None:
    done = bankctl(bank_cluster.home, "move-slots", "--slots", SLOTS, "--to", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert shard_owning(bank_cluster, MOVING[0]) == 0
    books = bank_cluster.check(wait_s=30)
    assert books["reconciled"], books
    moves = bank_cluster.status()["moves"]
    assert [m["state"] for m in moves[-2:]] == ["done", "done"]


def test_rebalance_evens_out_an_uneven_map_batch_by_batch(bank_cluster: Cluster) -> None:
    done = bankctl(bank_cluster.home, "move-slots", "--slots", "0-63", "--to", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = {s["shard"]: s["slot_count"] for s in bank_cluster.status()["shards"]}
    assert counts == {0: 277, 1: 341, 2: 406}
    done = bankctl(bank_cluster.home, "rebalance", "--batch", "16", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = printed_json(done.stdout)
    assert len(records) == 4 and all(
        r["state"] == "done" and r["slots"][1] - r["slots"][0] < 16 for r in records
    )
    assert {s["shard"]: s["slot_count"] for s in bank_cluster.status()["shards"]} == {0: 341, 1: 341, 2: 342}
    assert bank_cluster.check(wait_s=30)["reconciled"]


def test_a_move_of_slots_spanning_two_shards_is_refused(bank_cluster: Cluster) -> None:
    done = bankctl(bank_cluster.home, "move-slots", "--slots", "300-400", "--to", "2")
    assert done.returncode == 2 and "span shards" in done.stderr, done.stderr


CUT = (64, 79)  # shard 0 in the default map, and after the moves above


def cut_mover(cluster: Cluster) -> tuple[SlotMover, Any]:
    """A mover of the cluster's slots in this process, to leave a move half way on purpose."""
    return slot_moves.mover(require_state(cluster.home), lambda line: None)


def owner_and_states(cluster: Cluster, slot: int) -> tuple[int, str | None, str | None]:
    states = [cluster.sql(s, "SELECT state FROM slot_state WHERE slot = %s", (slot,)) for s in (0, 1)]
    return shard_owning(cluster, slot), *(rows[0][0] if rows else None for rows in states)  # type: ignore[return-value]


@pytest.mark.parametrize("cut", ["copying", "frozen"])
def test_a_move_cut_before_the_hand_over_is_rolled_back(bank_cluster: Cluster, cut: str) -> None:
    """The mover stops after copying (or after freezing the source): once its lock is gone, a
    bank-node gives the slots back to the source and removes the target's copy, with no command
    given; nothing is lost."""
    before = bank_cluster.check(wait_s=30)
    mover, close = cut_mover(bank_cluster)
    try:
        mover.journal.lock("a test leaving a move half way")
        record = mover.journal.start(CUT[0], CUT[1], 0, 1)
        mover._copy(SlotRange(*CUT), 0, 1)
        if cut == "frozen":
            mover._set(0, SlotRange(*CUT), "FROZEN", None)
            mover.journal.update(record, state="frozen")
        assert owner_and_states(bank_cluster, CUT[0]) == (
            0,
            cut.upper() if cut == "frozen" else "OWNED",
            "INCOMING",
        )
    finally:
        close()  # as a mover dies: its session, and the lock, go
    resumed = settled_by_the_nodes(bank_cluster, record["id"])
    assert resumed["state"] == "rolled_back" and "before the hand-over" in resumed["error"], resumed
    assert resumed["resumed_by"].startswith("keeper of node"), resumed
    assert owner_and_states(bank_cluster, CUT[0]) == (0, "OWNED", None)
    assert bank_cluster.sql(1, LEFT, CUT) == [(0,)]  # the target's copy is gone
    after = bank_cluster.check(wait_s=30)
    assert after["reconciled"] and after["currencies"] == before["currencies"]


def test_a_copy_that_differs_from_its_source_is_rolled_back_before_any_freeze(bank_cluster: Cluster) -> None:
    """A copied balance altered on the target (as a faulty copy would leave it): the catch-up's
    comparison finds it, names the slot, and the move rolls back without freezing anything."""
    with bank_cluster.client() as client:  # accounts of the cut's slots, whatever ran before
        for customer in customers_in(*CUT, 3, "cut-differs"):
            account = client.open_account(customer, "CNY").account_number
            client.deposit(account, 10_000, "CNY")
    before = bank_cluster.check(wait_s=30)
    mover, close = cut_mover(bank_cluster)
    try:
        mover.journal.lock("a test stepping through a move")  # the nodes leave it alone
        record = mover.journal.start(CUT[0], CUT[1], 0, 1)
        _, mark = mover._copy(SlotRange(*CUT), 0, 1)
        ((altered,),) = bank_cluster.sql(
            1, "UPDATE accounts SET balance = balance + 1 WHERE account_number ="
            " (SELECT min(account_number) FROM accounts WHERE slot BETWEEN %s AND %s) RETURNING slot", CUT,
        )  # fmt: skip
        with pytest.raises(MoveFailed, match=f"differs from the source in slots \\[{altered}\\]"):
            mover._pass(SlotRange(*CUT), 0, 1, mark, catch_up=True)
        mover._roll_back(record, SlotRange(*CUT), "the copy differs")
    finally:
        close()
    assert owner_and_states(bank_cluster, altered) == (0, "OWNED", None)
    assert bank_cluster.sql(1, LEFT, CUT) == [(0,)]
    after = bank_cluster.check(wait_s=30)
    assert after["reconciled"] and after["currencies"] == before["currencies"]


def test_accounts_are_not_loaded_while_slots_move(bank_cluster: Cluster) -> None:
    """load-accounts writes by COPY, past the slot fence: it is refused while a mover works past
    its --wait, waits for a move left half way until the bank's nodes have settled it, and
    loads once the moves are settled."""
    mover, close = cut_mover(bank_cluster)
    try:
        mover.journal.lock("a mover of this test")
        try:
            busy = bankctl(bank_cluster.home, "load-accounts", "--count", "10", "--wait", "1")
        finally:
            mover.journal.unlock()
        mover.journal.lock("a test leaving a move half way")
        record = mover.journal.start(CUT[0], CUT[1], 0, 1)  # left half way before it did anything
    finally:
        close()
    assert busy.returncode == 2 and "another mover is at work (a mover of this test)" in busy.stderr, busy
    loaded = bankctl(bank_cluster.home, "load-accounts", "--count", "10")
    assert loaded.returncode == 0, loaded.stdout[-2000:] + loaded.stderr[-2000:]
    assert move_record(bank_cluster, record["id"])["state"] == "rolled_back"  # settled before the load


@pytest.mark.parametrize("halves", [(), ("source",), ("target",)])
def test_a_move_cut_after_the_hand_over_is_finished(bank_cluster: Cluster, halves: tuple[str, ...]) -> None:
    """The mover stops once the journal passed the hand-over (with neither half done, or only
    the source's, or only the target's): a bank-node finishes the move, each half once."""
    accounts_before = bank_cluster.sql(0, LEFT, CUT)
    mover, close = cut_mover(bank_cluster)
    with contextlib.ExitStack() as stack:
        stack.callback(close)
        mover.journal.lock("a test leaving a move half way")
        record = mover.journal.start(CUT[0], CUT[1], 0, 1)
        _, mark = mover._copy(SlotRange(*CUT), 0, 1)
        _, mark, ahead = mover._pass(SlotRange(*CUT), 0, 1, mark, catch_up=True)
        mover._book_ahead(record, ahead)
        mover._set(0, SlotRange(*CUT), "FROZEN", None)
        src = stack.enter_context(psycopg.connect(mover.conninfo_of(0), autocommit=True))
        dst = stack.enter_context(psycopg.connect(mover.conninfo_of(1), autocommit=True))
        touched, _ = mover._final_pass(SlotRange(*CUT), src, dst, mark)
        mover.journal.update(record, state="handed_over")
        if "source" in halves:
            mover._half(record, SlotRange(*CUT), src, slots.GONE, 1, {**ahead, **touched}, ahead)
        if "target" in halves:
            mover._half(record, SlotRange(*CUT), dst, slots.OWNED, 2, {**ahead, **touched}, ahead)
    resumed = settled_by_the_nodes(bank_cluster, record["id"])
    assert resumed["state"] == "done" and resumed["resumed_by"].startswith("keeper of node"), resumed
    assert owner_and_states(bank_cluster, CUT[0]) == (1, "GONE", "OWNED")
    assert bank_cluster.sql(1, LEFT, CUT) == accounts_before and bank_cluster.sql(0, LEFT, CUT) == [(0,)]
    assert bank_cluster.check(wait_s=30)["reconciled"]  # each side's lines booked once
    done = bankctl(bank_cluster.home, "move-slots", "--slots", f"{CUT[0]}-{CUT[1]}", "--to", "0")
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_shard_added_under_load_takes_its_share_by_rebalance(
    bank_cluster: Cluster, accounts: dict[str, list[str]], pytestconfig: pytest.Config
) -> None:
    """add-shard while money moves: the new group is led by its DC's node and learnt by every
    gateway without a restart; rebalance gives it a quarter of the slots; nothing fails."""
    everyone = [a for group in accounts.values() for a in group]
    clients = [BankClient.from_home(bank_cluster.home, prefer_dc=dc, deadline_s=5) for dc in ("dc1", "dc2")]
    with under_load(clients, everyone) as loads, watching_owners(bank_cluster.home) as watch:
        started = time.monotonic()
        added = bankctl(bank_cluster.home, "add-shard", "--json", timeout_s=300)
        grown = time.monotonic() - started
        balanced = bankctl(bank_cluster.home, "rebalance", "--batch", "64", "--json", timeout_s=600)
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
    assert printed_json(added.stdout)["shard"] == 3
    assert balanced.returncode == 0, balanced.stdout[-3000:] + balanced.stderr[-3000:]
    records = printed_json(balanced.stdout)
    failed = [f for load in loads for f in load.failed]
    acked = sum(len(load.acked) for load in loads)
    freezes = [r["freeze_ms"] for r in records]
    report(
        pytestconfig,
        f"\n[moves] add-shard in {grown:.1f} s; rebalance: {len(records)} batches, freeze {freezes} ms;"
        f" {acked} acknowledged, {len(failed)} failed; slot owners sampled {watch.samples} times",
    )
    assert failed == [], failed[:5]
    watch.assert_one_writer()
    assert all(len(shards) == 1 for shards in owners(bank_cluster.home).values())  # one writable owner
    status = bank_cluster.status()
    assert {s["shard"]: s["slot_count"] for s in status["shards"]} == {0: 256, 1: 256, 2: 256, 3: 256}
    assert all(b["state"] == "streaming" for s in status["shards"] if s["shard"] == 3 for b in s["standbys"])
    with bank_cluster.client(deadline_s=10) as client:
        first, last = next(s["slots"][0] for s in status["shards"] if s["shard"] == 3)
        newcomer = client.open_account(customers_in(first, last, 1, "grown")[0], "CNY").account_number
        assert shard_owning(bank_cluster, slot_of_account(newcomer)) == 3
        assert client.deposit(newcomer, 500, "CNY").balance_after == 500
    assert bank_cluster.check(wait_s=30)["reconciled"]


def test_removing_a_shard_under_load_moves_its_slots_away_and_retires_it(
    bank_cluster: Cluster, accounts: dict[str, list[str]], pytestconfig: pytest.Config
) -> None:
    """remove-shard of one of the first three while money moves: its slots go to the others,
    its members stop, no node leads or fails it over, nothing fails, the books reconcile."""
    everyone = [a for group in accounts.values() for a in group]
    clients = [BankClient.from_home(bank_cluster.home, prefer_dc=dc, deadline_s=5) for dc in ("dc2", "dc3")]
    with under_load(clients, everyone) as loads, watching_owners(bank_cluster.home) as watch:
        started = time.monotonic()
        removed = bankctl(bank_cluster.home, "remove-shard", "1", "--batch", "64", "--json", timeout_s=600)
        took = time.monotonic() - started
    assert removed.returncode == 0, removed.stdout[-3000:] + removed.stderr[-3000:]
    result = printed_json(removed.stdout)
    failed = [f for load in loads for f in load.failed]
    acked = sum(len(load.acked) for load in loads)
    report(
        pytestconfig,
        f"\n[moves] remove-shard 1 in {took:.1f} s: {len(result['moves'])} batches, freeze"
        f" {[m['freeze_ms'] for m in result['moves']]} ms; {acked} acknowledged, {len(failed)} failed;"
        f" slot owners sampled {watch.samples} times",
    )
    assert failed == [], failed[:5]
    watch.assert_one_writer()
    assert all(len(shards) == 1 for shards in owners(bank_cluster.home).values())
    assert result["shards"] == [0, 2, 3]
    status = bank_cluster.status()
    counts = {s["shard"]: s["slot_count"] for s in status["shards"]}
    assert (
        set(counts) == {0, 2, 3}
        and sum(counts.values()) == 1024
        and max(counts.values()) - min(counts.values()) <= 1
    )
    assert not [c for c in status["components"] if c["kind"] == "postgres" and c["shard"] == 1]
    books = bank_cluster.check(wait_s=30)
    assert books["reconciled"], books
    with bank_cluster.client(deadline_s=10) as client:  # the accounts that lived on shard 1 serve on
        for account in accounts["other"]:
            assert client.deposit(account, 1, "CNY").balance_after > 0
