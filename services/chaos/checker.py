"""The bank invariants of a chaos run, checked against what every shard's primary holds.

Whole bank: total conserved (money in flight included), no balance below its limit, every
transfer's postings summing to zero, nothing PENDING once drained. Per transfer of the run:
every acknowledged transfer booked exactly once (one debit of its amount on its source, one
credit on its target), nothing booked that was refused or never requested. At the end, every
account of the run holds exactly its opening deposit plus what the history says moved.
Each anomaly names the transfer ids (or accounts) involved.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

from services.chaos.workload import History, Op
from services.cluster.check import check, current_primaries, current_shard_of_slot
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.common.identifiers import slot_of_account

MAX_NAMED = 20  # transfer ids or accounts named per anomaly

SQL_RUN_POSTINGS = """
SELECT p.transfer_id, t.kind, p.account_number, p.amount
FROM postings p JOIN transfers t USING (transfer_id)
WHERE p.account_number = ANY(%s)
"""
SQL_RUN_REQUESTS = "SELECT transfer_id, request_id FROM transfers WHERE transfer_id = ANY(%s)"
SQL_RUN_BALANCES = "SELECT account_number, balance FROM accounts WHERE account_number = ANY(%s)"
SQL_PENDING = "SELECT transfer_id FROM outbox WHERE status = 'PENDING' ORDER BY created_at LIMIT 20"


@dataclass
class Ledger:
    """What the shards hold about the run's accounts."""

    movements: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    requests: dict[str, str] = field(default_factory=dict)  # transfer id -> request id
    balances: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)


def read_ledger(state: ClusterState, accounts: list[str]) -> Ledger:
    """Each account read on the shard that owns its slot now: a shard a slot moved away from
    keeps a copy of its rows for a grace period, which is not the account's."""
    ledger = Ledger()
    owner = current_shard_of_slot(state)
    for shard, dc in current_primaries(state).items():
        conninfo = member_instance(state, shard, dc).conninfo(application_name="bankctl-chaos-check")
        accounts_here = [a for a in accounts if owner[slot_of_account(a)] == shard]
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            transfers = set()
            for transfer_id, kind, account, amount in conn.execute(SQL_RUN_POSTINGS, (accounts_here,)):
                if kind == "TRANSFER":
                    ledger.movements[str(transfer_id)].append((str(account), int(amount)))
                    transfers.add(str(transfer_id))
            for transfer_id, request_id in conn.execute(SQL_RUN_REQUESTS, (sorted(transfers),)):
                if str(request_id).startswith("chaos-"):
                    ledger.requests[str(transfer_id)] = str(request_id)
            balances = conn.execute(SQL_RUN_BALANCES, (accounts_here,))
            ledger.balances.update({str(a): int(b) for a, b in balances})
            ledger.pending += [str(t) for (t,) in conn.execute(SQL_PENDING)]
    return ledger


def anomaly(kind: str, detail: str, transfer_ids: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "detail": detail, "transfer_ids": sorted(transfer_ids or [])[:MAX_NAMED], **extra}


def per_transfer(ops: dict[str, Op], ledger: Ledger) -> list[dict[str, Any]]:
    """Acknowledged exactly once; nothing refused or unknown booked."""
    found: list[dict[str, Any]] = []
    acked = {op.transfer_id: op for op in ops.values() if op.outcome == "ok"}
    lost, doubled, wrong = [], [], []
    for transfer_id, op in acked.items():
        moves = ledger.movements.get(transfer_id, [])
        debits = [m for m in moves if m[1] < 0]
        credits = [m for m in moves if m[1] > 0]
        if not moves:
            lost.append(transfer_id)
        elif len(debits) > 1 or len(credits) > 1:
            doubled.append(transfer_id)
        elif debits != [(op.source, -op.amount)] or credits != [(op.target, op.amount)]:
            wrong.append(transfer_id)
    if lost:
        found.append(anomaly("lost", f"{len(lost)} acknowledged transfers not booked", lost))
    if doubled:
        found.append(anomaly("applied-twice", f"{len(doubled)} transfers booked more than once", doubled))
    if wrong:
        found.append(anomaly("half-applied", f"{len(wrong)} transfers booked other than requested", wrong))
    refused: list[str] = []
    unknown: list[str] = []
    for transfer_id in ledger.movements:
        if transfer_id in acked:
            continue
        asked = ops.get(ledger.requests.get(transfer_id, ""))
        if asked is None:
            unknown.append(transfer_id)
        elif asked.outcome == "fail":
            refused.append(transfer_id)
    if refused:
        found.append(anomaly("refused-but-applied", f"{len(refused)} refused transfers booked", refused))
    if unknown:
        found.append(anomaly("never-requested", f"{len(unknown)} transfers nobody asked for", unknown))
    return found


def balances(history: History, ledger: Ledger) -> list[dict[str, Any]]:
    """Each account = its opening deposit + every booked movement of the run's transfers; and
    that booked set is exactly the acknowledged transfers plus the unresolved `info`s found."""
    expected = dict(history.funding)
    for moves in ledger.movements.values():
        for account, amount in moves:
            expected[account] = expected.get(account, 0) + amount
    off = {a: ledger.balances.get(a, 0) - v for a, v in expected.items() if ledger.balances.get(a, 0) != v}
    if not off:
        return []
    named = sorted(off)[:MAX_NAMED]
    ids = [t for t, moves in ledger.movements.items() if any(m[0] in off for m in moves)]
    return [
        anomaly(
            "balance-mismatch", f"{len(off)} accounts differ from deposits plus their postings", ids,
            accounts={a: off[a] for a in named},
        )
    ]  # fmt: skip


def whole_bank(state: ClusterState, wait_s: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    books = check(state, wait_s=wait_s)
    found = []
    for currency, figures in books["currencies"].items():
        if not figures["reconciled"]:
            found.append(anomaly("total-not-conserved", f"{currency}: {figures}"))
    if books["negative_balances"]:
        accounts = [b["account"] for b in books["negative_balances"]]
        found.append(
            anomaly("negative-balance", f"{len(accounts)} accounts below their limit", accounts=accounts)
        )
    if books["unbalanced_transfers"]:
        ids = [b["transfer_id"] for b in books["unbalanced_transfers"]]
        found.append(
            anomaly("unbalanced-transfer", f"{len(ids)} transfers whose postings do not sum to 0", ids)
        )
    return books, found


def verify(state: ClusterState, history: History, final: bool, drain_s: float = 30.0) -> dict[str, Any]:
    """One checkpoint (or the final check): the whole bank, then the run's transfers."""
    books, found = whole_bank(state, drain_s)
    ledger = read_ledger(state, sorted(history.funding))
    if ledger.pending:
        found.append(
            anomaly("pending-left", f"{books['pending_transfers']} PENDING after draining", ledger.pending)
        )
    found += per_transfer(dict(history.ops), ledger)
    if final:
        found += balances(history, ledger)
    return {"reconciled": books["reconciled"], "pending": books["pending_transfers"], "anomalies": found}
