"""Latency of same-shard and cross-shard transfers through a gateway, one at a time.

    .venv/bin/python bench/transfer_latency.py [--home .bank] [--count 500]

Needs a running cluster (`bankctl up`). A cross-shard transfer is acknowledged PENDING once the
source has booked the debit; the time until it reads COMMITTED (the relay's delivery) is shown
too. Prints p50/p95/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bank.v1 import ledger_pb2
from bankclient import BankClient
from services.common.identifiers import NUM_SLOTS


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".bank"))
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    shards = json.loads((args.home / "cluster.json").read_text())["spec"]["shards"]

    def shard_of(account: str) -> int:
        slot = int(account[:4])  # the launcher's slot map: near-equal contiguous ranges
        return next(s for s in range(shards) if slot < (s + 1) * NUM_SLOTS // shards)

    with BankClient.from_home(args.home, deadline_s=10) as client:
        by_shard: dict[int, list[str]] = {}
        i = 0
        while len(by_shard) < min(2, shards) or any(len(v) < 2 for v in by_shard.values()):
            account = client.open_account(f"latency-{time.time_ns()}-{i}", "CNY").account_number
            i += 1
            by_shard.setdefault(shard_of(account), []).append(account)
        for accounts in by_shard.values():
            for account in accounts:
                client.deposit(account, 10**12, "CNY")
        first, second = sorted(by_shard)[:2]
        same = (by_shard[first][0], by_shard[first][1])
        cross = (by_shard[first][0], by_shard[second][0])
        results: dict[str, list[float]] = {"same-shard": [], "cross-shard (acknowledged)": [],
                                           "cross-shard (until COMMITTED)": []}  # fmt: skip
        for _ in range(args.count):
            started = time.perf_counter()
            client.transfer(*same, 1, "CNY")
            results["same-shard"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            answer = client.transfer(*cross, 1, "CNY")
            results["cross-shard (acknowledged)"].append((time.perf_counter() - started) * 1000)
            while answer.status == ledger_pb2.TRANSFER_STATUS_PENDING:
                answer = client.get_transfer(answer.transfer_id)
            results["cross-shard (until COMMITTED)"].append((time.perf_counter() - started) * 1000)
    print(f"{args.count} transfers of each kind, one at a time, through {client.gateways[0]}")
    print(f"{'kind':<32}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'mean ms':>9}")
    for kind, values in results.items():
        print(f"{kind:<32}{percentile(values, 0.5):>8.1f}{percentile(values, 0.95):>8.1f}"
              f"{percentile(values, 0.99):>8.1f}{statistics.mean(values):>9.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
