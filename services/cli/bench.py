"""`bankctl bench` (`make bench`): our transfers/s against the database's own limit, on a fresh
cluster, in the same run.

1. pgbench on shard 0's primary (synchronous standby, `ANY 1`): one transfer per transaction
   (two balance updates and a journal insert), 8 clients.
2. The full path (client -> gateway -> leader -> PostgreSQL with its sync standby), one
   `Transfer` per call, at increasing concurrency, between accounts of shard 0 (comparable with
   pgbench), then over all shards (scaling).
3. The same single transfers through a client that coalesces its callers' concurrent
   transfers into one `CreateTransfers` call (`BankClient(coalesce_transfers=True)`, as
   TigerBeetle's clients batch): one transfer per call for the application, not on the wire.
4. The batch API (`CreateTransfers`, 1,000 per call), shard 0 then all shards.
5. Direct routing (`BankClient(route="direct")`): the client calls shard 0's leader node itself,
   no gateway in between: one `Transfer` per call at the same concurrencies, all shards, the
   batch API, and coalescing.
6. The floor of one Python gRPC call here: `Health/Check` on the same gateway (no work behind it).

With `--profile`, py-spy on shard 0's leader node and a gateway during single transfers through
the gateways, and on the node during direct batches: only samples of a thread holding the GIL
(`--gil`), so the frames are where its Python spends CPU, not where its idle threads wait, and
the samples' count tells how much of the time the GIL was held.

Printed and written to reports/bench/<timestamp>.json and reports/bench/latest.json; CPU
seconds are summed over every process of the cluster (PostgreSQL's backends included); the
client's own CPU (this process) is given apart, since it runs on the same cores.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bankclient import BankClient, GatewayUnavailable, new_request_id
from services.cli.bench_report import BATCH_SIZE, render, sample_count, summary, top_frames
from services.cluster import launcher
from services.cluster.bulk_load import bulk_load
from services.cluster.check import check, current_primaries
from services.cluster.netns import choose_net
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.topology import ClusterSpec
from services.host.postgres import postgres_bin_dir

Say = Callable[[str], None]
PGBENCH_ACCOUNTS = 100_000
PGBENCH_CLIENTS = 8
COALESCED_THREADS = (64, 256, 512)
SAMPLES_PER_S = 20  # py-spy's rate
PGBENCH_SCRIPT = """\\set a random(1, {n})
\\set b random(1, {n})
\\set amount random(1, 100)
BEGIN;
UPDATE bench_accounts SET balance = balance - :amount WHERE id = :a;
UPDATE bench_accounts SET balance = balance + :amount WHERE id = :b;
INSERT INTO bench_journal (source, target, amount) VALUES (:a, :b, :amount);
END;
"""
PGBENCH_SETUP = f"""
DROP TABLE IF EXISTS bench_accounts, bench_journal;
CREATE TABLE bench_accounts (id integer PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO bench_accounts SELECT g, 1000000 FROM generate_series(1, {PGBENCH_ACCOUNTS}) g;
CREATE TABLE bench_journal (id bigserial PRIMARY KEY, source integer, target integer, amount bigint,
                            at timestamptz DEFAULT now());
"""


def cluster_cpu_s(state: ClusterState) -> float:
    """User + system CPU seconds of every process of the cluster and all their children."""
    return sum(cpu_s_by_kind(state).values())


def cpu_s_by_kind(state: ClusterState) -> dict[str, float]:
    """The same, per kind of component (PostgreSQL's backends count as postgres)."""
    seconds: dict[str, float] = {}
    for component in state.components:
        if not component.pid:
            continue
        try:
            process = psutil.Process(component.pid)
            for each in [process, *process.children(recursive=True)]:
                times = each.cpu_times()
                seconds[component.kind] = seconds.get(component.kind, 0.0) + times.user + times.system
        except psutil.Error:
            continue
    return seconds


def pgbench(state: ClusterState, seconds: float, say: Say) -> dict[str, Any]:
    primary = member_instance(state, 0, current_primaries(state)[0])
    with_password = {"PGPASSWORD": state.secrets["pg_password"]}
    psql = [
        str(postgres_bin_dir() / "psql"),
        "-h",
        primary.host,
        "-p",
        str(primary.port),
        "-U",
        "bank",
        "-d",
        "bank",
    ]
    subprocess.run([*psql, "-q", "-v", "ON_ERROR_STOP=1", "-c", PGBENCH_SETUP], env=with_password, check=True,
                   capture_output=True)  # fmt: skip
    script = state.home / "bench-transfer.sql"
    script.write_text(PGBENCH_SCRIPT.format(n=PGBENCH_ACCOUNTS), encoding="utf-8")
    say(
        f"pgbench: {PGBENCH_CLIENTS} clients, {seconds:.0f} s, on shard 0's primary "
        f"({primary.host}:{primary.port})"
    )
    cpu_before = cluster_cpu_s(state)
    done = subprocess.run(
        [str(postgres_bin_dir() / "pgbench"), "-n", "-f", str(script), "-c", str(PGBENCH_CLIENTS), "-j", "2",
         "-T", str(int(seconds)), "-r", "-h", primary.host, "-p", str(primary.port), "-U", "bank", "bank"],
        env=with_password, capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu_s = cluster_cpu_s(state) - cpu_before
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", done.stdout).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", done.stdout).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"number of transactions actually processed: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    subprocess.run([*psql, "-q", "-c", "DROP TABLE bench_accounts, bench_journal"], env=with_password,
                   check=False, capture_output=True)  # fmt: skip
    return {"tps": round(tps, 1), "latency_avg_ms": latency, "transfers": count,
            "cpu_s_per_1000_transfers": round(1000 * cpu_s / max(count, 1), 3)}  # fmt: skip


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


class Phase:
    """Transfers from `threads` threads for `seconds`; counts, latencies (ms), refusals."""

    def __init__(self, state: ClusterState, threads: int, seconds: float):
        self.state = state
        self.threads, self.seconds = threads, seconds
        self.latencies_ms: list[float] = []
        self.transfers = 0
        self.failed = 0
        self._lock = threading.Lock()

    def run(self, step: Callable[[random.Random], tuple[int, int, float]]) -> dict[str, Any]:
        cpu_before = cluster_cpu_s(self.state)
        client_cpu_before = time.process_time()
        started = time.monotonic()
        end = started + self.seconds

        def worker(index: int) -> None:
            rng = random.Random(index)
            while time.monotonic() < end:
                ok, failed, latency_ms = step(rng)
                with self._lock:
                    self.transfers += ok
                    self.failed += failed
                    self.latencies_ms.append(latency_ms)

        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            list(pool.map(worker, range(self.threads)))
        elapsed = time.monotonic() - started
        cpu_s = cluster_cpu_s(self.state) - cpu_before
        client_cpu_s = time.process_time() - client_cpu_before
        return {
            "threads": self.threads, "transfers": self.transfers, "failed": self.failed,
            "tps": round(self.transfers / elapsed, 1),
            "p50_ms": round(_percentile(self.latencies_ms, 0.50), 2),
            "p99_ms": round(_percentile(self.latencies_ms, 0.99), 2),
            "cpu_s_per_1000_transfers": round(1000 * cpu_s / max(self.transfers, 1), 3),
            "client_cpu_s_per_1000_transfers": round(1000 * client_cpu_s / max(self.transfers, 1), 3),
        }  # fmt: skip


def single_step(client: BankClient, accounts: list[str]) -> Callable[[random.Random], tuple[int, int, float]]:
    def step(rng: random.Random) -> tuple[int, int, float]:
        source, target = rng.sample(accounts, 2)
        started = time.perf_counter()
        try:
            client.transfer(
                source, target, rng.randint(1, 100), "CNY", request_id=f"bench-{new_request_id()}"
            )
            ok = 1
        except (grpc.RpcError, GatewayUnavailable):
            ok = 0
        return ok, 1 - ok, 1000 * (time.perf_counter() - started)

    return step


def batch_step(client: BankClient, accounts: list[str]) -> Callable[[random.Random], tuple[int, int, float]]:
    def step(rng: random.Random) -> tuple[int, int, float]:
        items = []
        for _ in range(BATCH_SIZE):
            source, target = rng.sample(accounts, 2)
            items.append((source, target, rng.randint(1, 100), "CNY", f"bench-{new_request_id()}"))
        started = time.perf_counter()
        try:
            results = client.create_transfers(items, deadline_s=60)
            ok = sum(1 for r in results if r.code == "OK")
        except (grpc.RpcError, GatewayUnavailable):
            ok = 0
        return ok, BATCH_SIZE - ok, 1000 * (time.perf_counter() - started)

    return step


def floor_step(stub: Any) -> Callable[[random.Random], tuple[int, int, float]]:
    """One `Health/Check` on the gateway: a gRPC call with nothing behind it."""

    def step(rng: random.Random) -> tuple[int, int, float]:
        started = time.perf_counter()
        try:
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            ok = 1
        except grpc.RpcError:
            ok = 0
        return ok, 1 - ok, 1000 * (time.perf_counter() - started)

    return step


def accounts_by_shard(state: ClusterState, path: Path) -> dict[int, list[str]]:
    shards: dict[int, list[str]] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        number, shard, _ = line.split(",")
        shards.setdefault(int(shard), []).append(number)
    return shards


def measure(state: ClusterState, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    path = bulk_load(state, args.accounts, 10_000_000, "CNY", lambda m: None)
    shards = accounts_by_shard(state, path)
    everyone = [a for accounts in shards.values() for a in accounts]
    report: dict[str, Any] = {"pgbench": pgbench(state, args.seconds, say), "single": [], "batch": {}}
    with BankClient.from_home(state.home, deadline_s=10) as client:
        for threads in args.concurrency:
            say(f"full path, one transfer per call, shard 0, {threads} threads, {args.seconds:.0f} s")
            phase = Phase(state, threads, args.seconds)
            report["single"].append(phase.run(single_step(client, shards[0])))
            say(f"  {report['single'][-1]}")
        best = max(report["single"], key=lambda r: r["tps"])
        say(f"full path, one transfer per call, all shards, {best['threads']} threads")
        report["single_all_shards"] = Phase(state, best["threads"], args.seconds).run(
            single_step(client, everyone)
        )
    with BankClient.from_home(state.home, deadline_s=10, coalesce_transfers=True) as coalescing:
        report["coalesced"] = []
        for threads in COALESCED_THREADS:
            say(f"full path, one transfer per call, client coalescing, shard 0, {threads} threads")
            phase = Phase(state, threads, args.seconds)
            report["coalesced"].append(phase.run(single_step(coalescing, shards[0])))
            say(f"  {report['coalesced'][-1]}")
        most = max(report["coalesced"], key=lambda r: r["tps"])["threads"]
        say(f"full path, one transfer per call, client coalescing, all shards, {most} threads")
        report["coalesced_all_shards"] = Phase(state, most, args.seconds).run(
            single_step(coalescing, everyone)
        )
    _direct_phases(state, args, shards[0], everyone, report, say)
    with BankClient.from_home(state.home, deadline_s=10) as client:
        for name, accounts in (("shard0", shards[0]), ("all_shards", everyone)):
            say(f"batch API, {BATCH_SIZE} per call, {name}, 4 threads")
            report["batch"][name] = Phase(state, 4, args.seconds).run(batch_step(client, accounts))
        if args.profile:
            step = single_step(client, shards[0])
            report["profile"] = profile(state, step, best["threads"], args, say)
        say(f"the floor of a gRPC call: Health/Check on a gateway, {best['threads']} threads")
        gateway = next(c for c in state.components if c.kind == "gateway")
        with grpc.insecure_channel(f"{gateway.host}:{gateway.port}") as channel:
            floor = Phase(state, best["threads"], args.seconds)
            report["grpc_floor"] = floor.run(floor_step(health_pb2_grpc.HealthStub(channel)))
    books = check(state, wait_s=60)
    report["books_reconcile"] = books["reconciled"] and books["pending_transfers"] == 0
    return report


def _direct_phases(
    state: ClusterState, args: argparse.Namespace, shard0: list[str], everyone: list[str],
    report: dict[str, Any], say: Say,
) -> None:  # fmt: skip
    """The client routes each transfer to its shard's leader itself (`route="direct"`): one RPC
    per transfer, batches, and coalescing."""
    with BankClient.from_home(state.home, deadline_s=10, route="direct") as direct:
        report["direct"] = []
        for threads in args.concurrency:
            say(f"direct routing, one transfer per call, shard 0, {threads} threads, {args.seconds:.0f} s")
            phase = Phase(state, threads, args.seconds)
            report["direct"].append(phase.run(single_step(direct, shard0)))
            say(f"  {report['direct'][-1]}")
        most = max(report["direct"], key=lambda r: r["tps"])["threads"]
        say(f"direct routing, one transfer per call, all shards, {most} threads")
        report["direct_all_shards"] = Phase(state, most, args.seconds).run(single_step(direct, everyone))
        report["direct_batch"] = {}
        for name, accounts in (("shard0", shard0), ("all_shards", everyone)):
            say(f"batch API, direct routing, {BATCH_SIZE} per call, {name}, 4 threads")
            report["direct_batch"][name] = Phase(state, 4, args.seconds).run(batch_step(direct, accounts))
        if args.profile:
            step = batch_step(direct, shard0)
            report["profile_batch"] = profile(state, step, 4, args, say, ("node",), "direct batches")
        assert direct.direct is not None
        report["direct_routing"] = {"answered_by_nodes": direct.direct.direct_calls,
                                    "sent_to_gateways": direct.direct.redirected}  # fmt: skip
    with BankClient.from_home(state.home, deadline_s=10, route="direct", coalesce_transfers=True) as both:
        threads = max(report["coalesced"], key=lambda r: r["tps"])["threads"]
        say(f"direct routing, one transfer per call, client coalescing, shard 0, {threads} threads")
        report["direct_coalesced"] = Phase(state, threads, args.seconds).run(single_step(both, shard0))


def profile(
    state: ClusterState,
    step: Callable[[random.Random], tuple[int, int, float]],
    threads: int,
    args: argparse.Namespace,
    say: Say,
    kinds: tuple[str, ...] = ("node", "gateway"),
    label: str = "single transfers",
) -> dict[str, Any]:
    """py-spy on shard 0's leader node (and a gateway of its DC) during one more phase of `step`:
    the functions where they spend their CPU (leaf frames, share of samples)."""
    leader_dc = current_primaries(state)[0]
    targets = {kind: next(c for c in state.components if c.kind == kind and c.dc == leader_dc)
               for kind in kinds}  # fmt: skip
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder = args.reports / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    files = {kind: folder / f"profile-{kind}-{label.replace(' ', '-')}-{stamp}.txt" for kind in targets}
    say(f"py-spy on {', '.join(f'{k}-{leader_dc}' for k in targets)} for {args.seconds:.0f} s of {label}")
    # 20 samples a second: a node has ~100 threads, and sampling them all costs CPU of its own
    # (at 200 a second with --gil, a node booked a third of its transfers).
    with open(folder / "py-spy.log", "ab") as log:
        spies = [
            subprocess.Popen(
                [spy, "record", "-p", str(c.pid), "-d", str(int(args.seconds)), "-r", str(SAMPLES_PER_S),
                 "-f", "raw", "-o", str(files[kind]), "--nonblocking", "--gil"],
                stdout=log, stderr=log,
            )
            for kind, c in targets.items()
        ]  # fmt: skip
        phase = Phase(state, threads, args.seconds).run(step)
        for process in spies:
            try:
                process.wait(timeout=3 * args.seconds + 60)
            except subprocess.TimeoutExpired:
                process.kill()  # bounded: a profile that cannot finish is left out, not waited for
    return {
        "phase": phase,
        **{kind: _profile_figures(path, args.seconds) for kind, path in files.items()},
    }


def _profile_figures(path: Path, seconds: float) -> dict[str, Any]:
    """A profile's file, its top frames, and how much of the time its process held the GIL."""
    held = 100 * sample_count(path) / (SAMPLES_PER_S * seconds)
    return {"file": str(path), "top": top_frames(path), "gil_held_pct": round(held, 1)}


def run(args: argparse.Namespace, say: Say) -> int:
    home = args.home / "bench"
    spec = ClusterSpec(
        net=choose_net(args.net), name="bench", octet=88, group_commit=not args.no_group_commit
    )
    started = time.monotonic()
    state = launcher.up(home, spec, say)
    try:
        report = measure(state, args, say)
    finally:
        launcher.down(home, say)
    figures = summary(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {"at": stamp, "seconds": round(time.monotonic() - started, 1),
           "group_commit": not args.no_group_commit,
           **figures, "phases": report}  # fmt: skip
    folder = args.reports / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    for name in (f"{stamp}.json", "latest.json"):
        (folder / name).write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(render(report, figures))
    for name in ("profile", "profile_batch"):
        for kind, spied in report.get(name, {}).items():
            if kind != "phase":
                held = spied.get("gil_held_pct", "?")
                print(
                    f"py-spy {kind}, {name} (self time holding the GIL, held {held}% of the time): "
                    + "; ".join(f"{f} {p}%" for f, p in spied["top"][:6])
                )
    say(f"written to {folder / (stamp + '.json')} and {folder / 'latest.json'}")
    return 0 if report["books_reconcile"] else 1
