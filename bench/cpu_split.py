"""Where a transfer's CPU goes, by process kind: single transfers through a gateway and routed
by the client itself (direct), and direct batches, on a fresh cluster (shard 0's accounts).

    .venv/bin/python bench/cpu_split.py [--seconds 15] [--threads 128]

Prints, per phase, transfers/s and the CPU milliseconds per transfer of each kind of cluster
process (children included: PostgreSQL's backends count as postgres) and of this client.
"""

from __future__ import annotations

import argparse
import sys
import time

from bankclient import BankClient
from services.cli.bench import Phase, batch_step, cpu_s_by_kind, single_step
from services.cli.bench_cluster import fresh_cluster

PHASES = (("gateway", "single"), ("direct", "single"), ("direct", "batch"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=128, help="callers of single transfers")
    parser.add_argument("--accounts", type=int, default=60_000)
    args = parser.parse_args()
    with fresh_cluster("split", 87, args.accounts) as (state, shard0):
        for route, kind in PHASES:
            with BankClient.from_home(state.home, deadline_s=10, route=route) as client:
                step = single_step(client, shard0) if kind == "single" else batch_step(client, shard0)
                threads = args.threads if kind == "single" else 4
                before, client_before = cpu_s_by_kind(state), time.process_time()
                phase = Phase(state, threads, args.seconds).run(step)
                after, client_after = cpu_s_by_kind(state), time.process_time()
            count = max(phase["transfers"], 1)
            split = {k: round(1000 * (after[k] - before.get(k, 0.0)) / count, 3) for k in sorted(after)}
            client_ms = round(1000 * (client_after - client_before) / count, 3)
            print(
                f"{route:<8}{kind:<7}{phase['tps']:>8,.0f}/s  CPU ms a transfer: {split}, client {client_ms}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
