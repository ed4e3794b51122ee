"""Every posting carries the business date of its own transaction, whichever path booked it (a
deposit, a single transfer, a set, a hold's capture), and a shard's cut to the next date under
load lets no movement straddle it: every posting of one transfer has one date, the new date's
postings all come after the old date's, no write is refused, and the cut waits milliseconds."""

from __future__ import annotations

import datetime as dt
import threading

from bank.v1 import ledger_pb2
from services.storage import business_day
from tests.eventually import eventually
from tests.integration.conftest import Bank, rid


def shard_date(bank: Bank) -> dt.date:
    return dt.date.fromisoformat(str(bank.sql("SELECT business_date FROM shard_day")[0][0]))


def pay(bank: Bank, source: str, target: str, amount: int) -> None:
    request = ledger_pb2.TransferRequest(
        request_id=rid(), from_account=source, to_account=target, amount=amount, currency="CNY"
    )
    bank.ledger.Transfer(request, timeout=5)


def dates_of(bank: Bank, account: str) -> list[str]:
    answer = bank.ledger.ListPostings(ledger_pb2.ListPostingsRequest(account_number=account, page_size=100))
    return [p.business_date for p in answer.postings]


def test_every_path_dates_its_postings_with_the_shards_date(bank: Bank) -> None:
    today = shard_date(bank)
    a, b = bank.open("dated-a"), bank.open("dated-b")
    bank.deposit(a, 1_000)
    pay(bank, a, b, 10)
    one = {"from_account": a, "to_account": b, "amount": 1, "currency": "CNY"}
    items = [ledger_pb2.TransferRequest(request_id=rid(), **one) for _ in range(3)]  # type: ignore[arg-type]
    bank.ledger.CreateTransfers(ledger_pb2.CreateTransfersRequest(transfers=items), timeout=30)
    held = {"account_number": a, "to_account": b, "amount": 5, "currency": "CNY", "timeout_seconds": 60}
    hold = bank.ledger.CreateHold(ledger_pb2.CreateHoldRequest(request_id=rid(), **held))  # type: ignore[arg-type]
    bank.ledger.CaptureHold(
        ledger_pb2.CaptureHoldRequest(request_id=rid(), hold_id=hold.hold.hold_id, amount=5)
    )
    assert dates_of(bank, a) == [today.isoformat()] * 6  # deposit, transfer, three in a set, capture
    undated = bank.sql("SELECT count(*) FROM postings WHERE business_date IS DISTINCT FROM %s", (today,))
    assert undated == [(0,)]


def test_a_cut_never_moves_a_shard_back(bank: Bank) -> None:
    today = shard_date(bank)
    cut = business_day.cut(bank.conninfo, today - dt.timedelta(days=1))
    assert (cut.was, cut.now) == (today, today) and shard_date(bank) == today


def test_a_cut_under_load_splits_no_transfer_and_refuses_no_write(bank: Bank) -> None:
    today = shard_date(bank)
    payers = [bank.open(f"cut-payer-{i}") for i in range(4)]
    payee = bank.open("cut-payee")
    for payer in payers:
        bank.deposit(payer, 1_000_000)
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_paying(payer: str) -> None:
        while not stop.is_set():
            try:
                pay(bank, payer, payee, 1)
            except BaseException as err:  # every refusal is a failure of the cut
                errors.append(err)
                return

    threads = [threading.Thread(target=keep_paying, args=(p,)) for p in payers]
    for thread in threads:
        thread.start()

    def booked_on(date: dt.date) -> int:
        rows = bank.sql("SELECT count(*) FROM postings WHERE account_number = %s AND business_date = %s",
                        (payee, date))  # fmt: skip
        return int(rows[0][0])  # type: ignore[call-overload]

    try:
        eventually(lambda: booked_on(today) >= 50, 30, "transfers booked before the cut")
        cut = business_day.cut(bank.conninfo, today + dt.timedelta(days=1))
        eventually(lambda: booked_on(today + dt.timedelta(days=1)) >= 50, 30, "transfers after the cut")
    finally:
        stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert (cut.was, cut.now) == (today, today + dt.timedelta(days=1)) and cut.took_ms < 1_000, cut
    rows = bank.sql(
        "SELECT transfer_id, count(DISTINCT business_date), min(business_date), max(sequence), min(sequence)"
        " FROM postings WHERE account_number = ANY(%s) AND transfer_id LIKE 'T%%' GROUP BY transfer_id",
        (payers,),
    )
    assert rows and all(row[1] == 1 for row in rows)  # both lines of a transfer: one date
    before = [row for row in rows if row[2] == today]
    after = [row for row in rows if row[2] == today + dt.timedelta(days=1)]
    assert before and after and len(before) + len(after) == len(rows)
    assert max(row[3] for row in before) < min(row[4] for row in after)  # the old day's lines first
