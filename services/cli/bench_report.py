"""What `bankctl bench` prints and writes: the summary figures of its JSON, the table, and the
leaf frames of a py-spy profile."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

BATCH_SIZE = 1_000  # transfers per CreateTransfers call in the batch phases


def leaf_samples(path: Path) -> Counter[str]:
    """Samples per leaf frame (the frame running when sampled) of a raw py-spy profile."""
    frames: Counter[str] = Counter()
    if not path.exists():
        return frames
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, samples = line.rpartition(" ")
        if samples.isdigit():
            frames[stack.split(";")[-1]] += int(samples)
    return frames


def sample_count(path: Path) -> int:
    """How many samples a raw py-spy profile holds."""
    return sum(leaf_samples(path).values())


def top_frames(path: Path, count: int = 12) -> list[list[Any]]:
    """[frame, % of samples] for the frames running when sampled (self time), most first."""
    frames = leaf_samples(path)
    total = sum(frames.values())
    return [[frame, round(100 * n / max(total, 1), 1)] for frame, n in frames.most_common(count)]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    pg = report["pgbench"]["tps"]
    best = max(report["single"], key=lambda r: r["tps"])
    batch = report["batch"]["shard0"]
    coalesced = max(report["coalesced"], key=lambda r: r["tps"])
    return {
        "pgbench_tps": pg, "single_tps": best["tps"], "single_ratio": round(best["tps"] / pg, 3),
        "batch_tps": batch["tps"], "batch_ratio": round(batch["tps"] / pg, 3),
        "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
        "cpu_s_per_1000_transfers": best["cpu_s_per_1000_transfers"],
        "single_all_shards_tps": report["single_all_shards"]["tps"],
        "batch_all_shards_tps": report["batch"]["all_shards"]["tps"],
        "scaling_single_all_vs_one": round(report["single_all_shards"]["tps"] / best["tps"], 3),
        "scaling_batch_all_vs_one": round(report["batch"]["all_shards"]["tps"] / batch["tps"], 3),
        "single_coalesced_tps": coalesced["tps"], "single_coalesced_ratio": round(coalesced["tps"] / pg, 3),
        "single_coalesced_p50_ms": coalesced["p50_ms"], "single_coalesced_p99_ms": coalesced["p99_ms"],
        "single_coalesced_all_shards_tps": report["coalesced_all_shards"]["tps"],
        "grpc_floor_calls_per_s": report["grpc_floor"]["tps"],
        "batch_cpu_ms_per_transfer": batch["cpu_s_per_1000_transfers"],
        **direct_summary(report, pg),
    }  # fmt: skip


def direct_summary(report: dict[str, Any], pg: float) -> dict[str, Any]:
    """The figures of direct routing (the client calls each shard's leader node itself)."""
    best = max(report["direct"], key=lambda r: r["tps"])
    batch = report["direct_batch"]["shard0"]
    return {
        "direct_single_tps": best["tps"], "direct_single_ratio": round(best["tps"] / pg, 3),
        "direct_single_threads": best["threads"],
        "direct_p50_ms": best["p50_ms"], "direct_p99_ms": best["p99_ms"],
        "direct_cpu_s_per_1000_transfers": best["cpu_s_per_1000_transfers"],
        "direct_single_all_shards_tps": report["direct_all_shards"]["tps"],
        "direct_coalesced_tps": report["direct_coalesced"]["tps"],
        "direct_coalesced_ratio": round(report["direct_coalesced"]["tps"] / pg, 3),
        "direct_batch_tps": batch["tps"], "direct_batch_ratio": round(batch["tps"] / pg, 3),
        "direct_batch_cpu_ms_per_transfer": batch["cpu_s_per_1000_transfers"],
        "direct_batch_all_shards_tps": report["direct_batch"]["all_shards"]["tps"],
    }  # fmt: skip


def render(report: dict[str, Any], figures: dict[str, Any]) -> str:
    lines = [f"{'what':<50}{'per s':>8}{'vs pgbench':>11}{'p50 ms':>9}{'p99 ms':>9}{'CPU s/1k':>10}"
             f"{'client':>8}"]  # fmt: skip
    pg = report["pgbench"]
    lines.append(f"{'pgbench, 8 clients, shard 0 primary':<50}{pg['tps']:>8,.0f}{1:>11.2f}x"
                 f"{pg['latency_avg_ms']:>8.1f}*{'':>9}{pg['cpu_s_per_1000_transfers']:>10.2f}")  # fmt: skip
    rows = [(f"full path, 1 RPC/transfer, shard 0, {r['threads']} thr", r) for r in report["single"]]
    rows.append((f"full path, 1 RPC/transfer, all shards, {report['single_all_shards']['threads']} thr",
                 report["single_all_shards"]))  # fmt: skip
    rows += [(f"1/call, client coalescing, shard 0, {r['threads']} thr", r) for r in report["coalesced"]]
    rows.append((f"1/call, client coalescing, all shards, {report['coalesced_all_shards']['threads']} thr",
                 report["coalesced_all_shards"]))  # fmt: skip
    rows += [
        (f"batch API, {BATCH_SIZE}/call, {name.replace('_', ' ')}", r) for name, r in report["batch"].items()
    ]
    rows += [(f"direct routing, 1 RPC/transfer, shard 0, {r['threads']} thr", r) for r in report["direct"]]
    rows.append((f"direct routing, 1 RPC/transfer, all shards, {report['direct_all_shards']['threads']} thr",
                 report["direct_all_shards"]))  # fmt: skip
    rows.append((f"direct, client coalescing, shard 0, {report['direct_coalesced']['threads']} thr",
                 report["direct_coalesced"]))  # fmt: skip
    rows += [
        (f"batch API, direct, {BATCH_SIZE}/call, {name.replace('_', ' ')}", r)
        for name, r in report["direct_batch"].items()
    ]
    rows.append((f"gRPC floor: Health/Check on a gateway, {report['grpc_floor']['threads']} thr",
                 report["grpc_floor"]))  # fmt: skip
    for label, r in rows:
        lines.append(f"{label:<50}{r['tps']:>8,.0f}{r['tps'] / pg['tps']:>11.2f}x{r['p50_ms']:>9.1f}"
                     f"{r['p99_ms']:>9.1f}{r['cpu_s_per_1000_transfers']:>10.2f}"
                     f"{r.get('client_cpu_s_per_1000_transfers', 0):>8.2f}")  # fmt: skip
    lines.append("* pgbench reports the average latency; batch latencies are per call of 1,000 transfers.")
    lines.append("  CPU s/1k: all the cluster's processes; client: the benchmark's own Python client, on")
    lines.append("  the same cores. The gRPC floor row counts calls with no work behind them, not transfers.")
    lines.append(f"single path {figures['single_ratio']:.2f}x pgbench with one RPC per transfer, "
                 f"{figures['single_coalesced_ratio']:.2f}x with client coalescing; "
                 f"batch API {figures['batch_ratio']:.2f}x "
                 f"({figures['batch_cpu_ms_per_transfer']:.3f} ms of cluster CPU a transfer); "
                 f"direct routing {figures['direct_single_ratio']:.2f}x with one RPC per transfer, "
                 f"batch API direct {figures['direct_batch_ratio']:.2f}x "
                 f"({figures['direct_batch_cpu_ms_per_transfer']:.3f} ms); "
                 f"books reconcile: {'yes' if report['books_reconcile'] else 'NO'}")  # fmt: skip
    return "\n".join(lines)
