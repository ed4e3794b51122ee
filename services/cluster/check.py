"""`bankctl check`: does the whole bank reconcile? Reads every shard's primary.

Per currency: the sum of all balances plus the money in flight between shards must equal the
money deposited minus the money withdrawn; the transit accounts must hold exactly the money in
flight; no balance may be below its limit and every transfer's postings must sum to zero.
Shards are read one after the other, so the figures agree exactly only when the bank is quiet;
`--wait` reads again until they do (or the time is up).
"""

from __future__ import annotations

import time
from typing import Any

from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.common.identifiers import NUM_SLOTS
from services.common.routes import RoutingTable
from services.storage.audit import ShardBooks, read_books


def current_table(state: ClusterState) -> RoutingTable:
    """The routing table as ZooKeeper has it now (an empty one when it cannot be reached)."""
    try:
        with zk_client(state, timeout_s=5) as dcs:
            return dcs.read_table()
    except Exception:
        return RoutingTable(version=0, slot_ranges=[])


def current_shard_of_slot(state: ClusterState) -> list[int]:
    """slot -> shard, as ZooKeeper's slot map says now (slots move); the launcher's plan if it cannot."""
    owners = [0] * NUM_SLOTS
    for first, last, shard in current_table(state).slot_ranges or state.spec.slot_ranges():
        owners[first : last + 1] = [shard] * (last - first + 1)
    return owners


def current_primaries(state: ClusterState) -> dict[int, str]:
    """shard -> DC of its primary, as ZooKeeper says (the launcher's plan if it cannot)."""
    routes = current_table(state).routes
    return {
        s: (routes[s].leader_dc if s in routes else state.spec.primary_dc(s)) for s in state.active_shards
    }


def check_once(state: ClusterState) -> dict[str, Any]:
    books: list[ShardBooks] = []
    for shard, dc in current_primaries(state).items():
        books.append(
            read_books(member_instance(state, shard, dc).conninfo(application_name="bankctl-check"), shard)
        )
    return summarize(books)


def summarize(books: list[ShardBooks]) -> dict[str, Any]:
    currencies = sorted({c for b in books for c in (*b.balances, *b.net_deposits, *b.in_flight, *b.transit)})
    per_currency = {}
    for currency in currencies:
        balances = sum(b.balances.get(currency, 0) for b in books)
        in_flight = sum(b.in_flight.get(currency, 0) for b in books)
        net = sum(b.net_deposits.get(currency, 0) for b in books)
        transit = sum(b.transit.get(currency, 0) for b in books)
        per_currency[currency] = {
            "balances": balances,
            "in_flight": in_flight,
            "deposited_minus_withdrawn": net,
            "transit_accounts": transit,
            "reconciled": balances + in_flight == net and transit == in_flight,
        }
    below = [{"shard": b.shard, "account": n, "balance": v} for b in books for n, v in b.below_limit]
    unbalanced = [{"shard": b.shard, "transfer_id": t} for b in books for t in b.unbalanced]
    return {
        "reconciled": all(c["reconciled"] for c in per_currency.values()) and not below and not unbalanced,
        "currencies": per_currency,
        "pending_transfers": sum(b.pending for b in books),
        "negative_balances": below,
        "unbalanced_transfers": unbalanced,
        "shards": [
            {
                "shard": b.shard,
                "accounts": b.accounts,
                "pending": b.pending,
                "transfers": b.transfers_by_status,
            }
            for b in books
        ],
    }


def check(state: ClusterState, wait_s: float = 0.0) -> dict[str, Any]:
    """Reads until the books reconcile with nothing pending, or `wait_s` is spent."""
    deadline = time.monotonic() + wait_s
    while True:
        report = check_once(state)
        settled = report["reconciled"] and report["pending_transfers"] == 0
        if settled or time.monotonic() >= deadline:
            return report
        time.sleep(0.25)


def render(report: dict[str, Any]) -> str:
    lines = [f"{'currency':<9}{'balances':>18}{'in flight':>14}{'deposited-withdrawn':>22}  reconciled"]
    for currency, c in report["currencies"].items():
        lines.append(
            f"{currency:<9}{c['balances']:>18,}{c['in_flight']:>14,}{c['deposited_minus_withdrawn']:>22,}  "
            f"{'yes' if c['reconciled'] else 'NO'}"
        )
    lines.append(f"pending cross-shard transfers: {report['pending_transfers']}")
    lines.append(f"balances below their limit: {len(report['negative_balances'])}")
    lines.append(f"transfers whose postings do not sum to zero: {len(report['unbalanced_transfers'])}")
    lines.append("the bank reconciles" if report["reconciled"] else "THE BANK DOES NOT RECONCILE")
    return "\n".join(lines)
