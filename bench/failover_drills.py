"""Runs DC cut drills in a row on a fresh cluster and prints each one's RTO, phases and scores,
then the median and the worst per kind of cut.

    .venv/bin/python bench/failover_drills.py [--kill 5] [--isolate 3] [--for 12] [--dc-of-shard 0]
                                              [--zk-leader] [--lead-all]

Each drill cuts the DC that leads `--dc-of-shard` now (with `--zk-leader`: the DC that holds
ZooKeeper's leader now, which leads a shard too; with `--lead-all`, every shard is switched
over to that DC first), under the drill's own load, and switches the leaders back after (so
every drill starts from the same layout). The cluster is stopped at the end, whatever
happened; the scorecards stay under <home>/drills/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def bankctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "--home", str(home), *args],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip


def leader_of(home: Path, shard: int | None) -> str:
    """The DC leading `shard` now (None: the DC of ZooKeeper's leader)."""
    status = json.loads(bankctl(home, "status", "--json").stdout)
    if shard is None:
        return str(
            next(c["dc"] for c in status["components"] if c["kind"] == "zookeeper" and c["role"] == "leader")
        )
    return str(next(s["primary_dc"] for s in status["shards"] if s["shard"] == shard))


def lead_all_from(home: Path, dc: str) -> None:
    status = json.loads(bankctl(home, "status", "--json").stdout)
    for shard in (s["shard"] for s in status["shards"] if s["primary_dc"] != dc):
        done = bankctl(home, "switchover", str(shard), "--to", dc)
        if done.returncode != 0:
            raise SystemExit(f"switchover of shard {shard} to {dc} failed:\n{done.stderr[-3000:]}")


def drill(
    home: Path, cut: str, shard: int | None, hold_s: float, lead_all: bool = False, route: str = "gateway"
) -> dict[str, Any]:
    dc = leader_of(home, shard)
    if lead_all:
        lead_all_from(home, dc)
    done = bankctl(
        home,
        "drill",
        "--cut",
        cut,
        "--dc",
        dc,
        "--for",
        str(hold_s),
        "--switch-back",
        "--json",
        "--route",
        route,
    )
    if not done.stdout.strip():
        raise SystemExit(f"drill {cut} {dc} printed no scorecard:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def line(result: dict[str, Any]) -> str:
    rto = ", ".join(f"s{s} {v:.2f} s" for s, v in result["rto_s"].items() if v is not None)
    phases = "; ".join(
        f"s{s}: " + " ".join(f"{k} {v:.0f}" for k, v in p.items()) for s, p in result["phases_ms"].items()
    )
    failed = [name for name, ok in result["scores"].items() if not ok]
    return (
        f"{result['cut']:<8}{result['dc']:<5} RTO {rto} | failed operations {result['failed_operations']}"
        f" of {result['operations']}, calls {result['failed_calls']} | whole {result['recovered_s']} s"
        f" | {'all four scores' if not failed else 'FAILED ' + ', '.join(failed)}\n         {phases}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill", type=int, default=5)
    parser.add_argument("--isolate", type=int, default=3)
    parser.add_argument("--for", type=float, default=12.0, dest="hold_s")
    parser.add_argument("--dc-of-shard", type=int, default=0)
    parser.add_argument("--zk-leader", action="store_true", help="cut the DC of ZooKeeper's leader")
    parser.add_argument("--lead-all", action="store_true", help="every shard led from the cut DC first")
    parser.add_argument(
        "--route", choices=("gateway", "direct"), default="gateway", help="how the drills' workload routes"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bank-drills-"))
    up = bankctl(home, "up", "--net", "netns")
    if up.returncode != 0:
        print(up.stdout[-2000:], up.stderr[-2000:])
        return 1
    results: list[dict[str, Any]] = []
    try:
        for cut in ["kill"] * args.kill + ["isolate"] * args.isolate:
            shard = None if args.zk_leader else args.dc_of_shard
            results.append(drill(home, cut, shard, args.hold_s, args.lead_all, args.route))
            print(line(results[-1]), flush=True)
    finally:
        bankctl(home, "down")
    for cut in ("kill", "isolate"):
        rtos = [v for r in results if r["cut"] == cut for v in r["rto_s"].values() if v is not None]
        if rtos:
            median, worst = statistics.median(rtos), max(rtos)
            print(f"{cut}: {len(rtos)} shard recoveries, median {median:.2f} s, worst {worst:.2f} s")
    passed = sum(1 for r in results if r["ok"])
    print(f"{passed} of {len(results)} drills scored all four; scorecards in {home / 'drills'}")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
