"""The other side of a fast failover: a busy bank must not lose a leader by itself. Runs the
heaviest phase of `make bench` (client coalescing, every shard, 512 threads) for `--minutes` on
a fresh 3 DCs x 3 shards cluster, then counts what nobody caused: failovers, leaders found
refusing or silent, ZooKeeper sessions suspended or lost, fences. Exit 1 if any failover.

    .venv/bin/python bench/busy_guard.py [--minutes 10] [--threads 512]

The cluster is stopped at the end, whatever happened; its logs stay under the home.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bankclient import BankClient
from services.cli.bench import Phase, accounts_by_shard, single_step
from services.cluster import launcher
from services.cluster.bulk_load import bulk_load
from services.cluster.netns import choose_net
from services.cluster.state import ClusterState
from services.cluster.topology import ClusterSpec
from services.cluster.zookeeper import zk_client

# What a node logs when it suspects, loses or takes over a leader, or loses its own session.
EVENTS = re.compile(
    r"event=(failover_done|failover_chosen|leader_refuses|leader_silent|leader_cut_off|fenced|"
    r"zk_session_[a-z]+|stopped_serving)\b"
)


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def epochs(state: ClusterState) -> dict[int, tuple[str, int]]:
    with zk_client(state) as dcs:
        table = dcs.read_table()
    return {shard: (route.leader_dc, route.epoch) for shard, route in sorted(table.routes.items())}


def events(state: ClusterState) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in sorted((state.home / "logs").glob("node-*.log")):
        for match in EVENTS.finditer(path.read_text(encoding="utf-8", errors="replace")):
            found[match.group(1)] += 1
    return found


def guard(home: Path, minutes: float, threads: int, accounts: int) -> dict[str, Any]:
    state = launcher.up(home, ClusterSpec(net=choose_net("auto"), name="guard", octet=89), say)
    try:
        path = bulk_load(state, accounts, 10_000_000, "CNY", say)
        everyone = [a for numbers in accounts_by_shard(state, path).values() for a in numbers]
        before, events_before = epochs(state), events(state)
        say(f"leaders before: {before}; coalescing, every shard, {threads} threads, {minutes:g} min")
        with BankClient.from_home(state.home, deadline_s=10, coalesce_transfers=True) as client:
            phase = Phase(state, threads, minutes * 60).run(single_step(client, everyone))
        after = epochs(state)
        with zk_client(state) as dcs:
            failovers = dcs.failovers()
        caused_by_none = dict(events(state) - events_before)
        return {
            "minutes": minutes, "threads": threads, "phase": phase, "leaders_before": before,
            "leaders_after": after, "failovers": len(failovers), "events": caused_by_none,
        }  # fmt: skip
    finally:
        launcher.down(home, say)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=512)
    parser.add_argument("--accounts", type=int, default=30_000)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="busy-guard-"))
    result = guard(home, args.minutes, args.threads, args.accounts)
    phase = result["phase"]
    moved = result["leaders_before"] != result["leaders_after"]
    print(json.dumps(result, default=str))
    print(
        f"{result['minutes']:g} min, {phase['transfers']} transfers at {phase['tps']}/s"
        f" (p99 {phase['p99_ms']} ms, {phase['failed']} failed,"
        f" cluster CPU {phase['cpu_s_per_1000_transfers']} s per 1,000); failovers {result['failovers']};"
        f" leaders moved: {moved}; events nobody caused: {result['events'] or 'none'}"
    )
    return 1 if result["failovers"] or moved else 0


if __name__ == "__main__":
    sys.exit(main())
