"""Where a bank-node's CPU goes below Python during single transfers routed by the client
(`route="direct"`, one RPC per transfer): `perf record` on shard 0's leader node, then its
samples by shared object (the kernel, the interpreter, gRPC's core, libc, protobuf, psycopg and
libpq) and the hottest symbols, on a fresh cluster.

    .venv/bin/python bench/node_perf.py [--seconds 12] [--threads 128]

py-spy shows the node's Python; this shows what py-spy cannot: the kernel's share (waking and
switching threads: a call is handed from gRPC's poller to a handler thread, from it to the
shard's set and back) and gRPC's C core. Needs `perf` (Debian: `apt-get install linux-perf`)
and the right to trace the node (root, or kernel.perf_event_paranoid <= 1).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bankclient import BankClient
from services.cli.bench import Phase, single_step
from services.cli.bench_cluster import fresh_cluster
from services.cluster.check import current_primaries

SAMPLES_PER_S = 499  # perf's default rate is ~4,000 a second: less disturbs the node less
TOP_SYMBOLS = 15


def report(data: Path, sort: str) -> list[str]:
    """`perf report` lines (share, then the key) sorted by `sort`, without its comments."""
    text = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=128, help="callers of single transfers")
    parser.add_argument("--accounts", type=int, default=60_000)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 2
    with fresh_cluster("nperf", 85, args.accounts) as (state, shard0), tempfile.TemporaryDirectory() as out:
        leader_dc = current_primaries(state)[0]
        node = next(c for c in state.components if c.kind == "node" and c.dc == leader_dc)
        data = Path(out) / "perf.data"
        with BankClient.from_home(state.home, deadline_s=10, route="direct") as client:
            step = single_step(client, shard0)
            Phase(state, args.threads, 5).run(step)  # warm: channels, plans, pages
            record = subprocess.Popen(
                ["perf", "record", "-F", str(SAMPLES_PER_S), "-g", "-o", str(data), "-p", str(node.pid),
                 "--", "sleep", str(args.seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            phase = Phase(state, args.threads, args.seconds).run(step)
            if record.wait(timeout=args.seconds + 60) != 0:
                print("perf record failed (is tracing allowed here? see the docstring)", file=sys.stderr)
                return 1
        print(
            f"direct singles, {args.threads} callers: {phase['tps']:,.0f}/s while node-{leader_dc} was traced"
        )
        print("its CPU samples by shared object:")
        print("\n".join(f"  {line}" for line in report(data, "dso")[:10]))
        print(f"its {TOP_SYMBOLS} hottest symbols:")
        print("\n".join(f"  {line}" for line in report(data, "dso,sym")[:TOP_SYMBOLS]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
