"""Times `bankctl up` (median of N runs) and measures the memory of the whole cluster.

    .venv/bin/python bench/cluster_footprint.py [--runs 3] [--net auto|netns|loopback]

Memory is given as PSS (shared pages divided among the processes that share them, so
PostgreSQL's shared buffers are not counted once per backend) and as plain RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def bankctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "--home", str(home), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def memory(status: dict) -> dict[str, dict[str, float]]:
    by_kind: dict[str, dict[str, float]] = {}
    for component in status["components"]:
        root = psutil.Process(component["pid"])
        for process in [root, *root.children(recursive=True)]:
            info = process.memory_full_info()
            entry = by_kind.setdefault(component["kind"], {"pss_mib": 0.0, "rss_mib": 0.0, "processes": 0})
            entry["pss_mib"] += info.pss / 2**20
            entry["rss_mib"] += info.rss / 2**20
            entry["processes"] += 1
    return by_kind


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--net", default="auto")
    args = parser.parse_args()
    times, footprint = [], {}
    for run in range(1, args.runs + 1):
        home = Path(tempfile.mkdtemp(prefix="bank-footprint-"))
        started = time.monotonic()
        up = bankctl(home, "up", "--net", args.net)
        elapsed = time.monotonic() - started
        try:
            if up.returncode != 0:
                print(up.stdout[-2000:], up.stderr[-2000:])
                return 1
            times.append(elapsed)
            status = json.loads(bankctl(home, "status", "--json").stdout)
            footprint = memory(status)
            print(f"run {run}: bankctl up --net {status['net']} took {elapsed:.1f} s", flush=True)
        finally:
            bankctl(home, "down")
    print(f"bankctl up: median {statistics.median(times):.1f} s over {len(times)} runs "
          f"({', '.join(f'{t:.1f}' for t in times)})")  # fmt: skip
    total_pss = sum(k["pss_mib"] for k in footprint.values())
    total_rss = sum(k["rss_mib"] for k in footprint.values())
    for kind, entry in sorted(footprint.items()):
        print(f"  {kind:<10} {entry['processes']:>3} processes  PSS {entry['pss_mib']:7.0f} MiB"
              f"  RSS {entry['rss_mib']:7.0f} MiB")  # fmt: skip
    print(f"  {'total':<10} {'':>13}  PSS {total_pss:7.0f} MiB  RSS {total_rss:7.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
