"""`bankctl up`, `status` and `down`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from services.chaos import faults
from services.cluster import check, day_status, dc_lifecycle, launcher, slot_moves, status
from services.cluster.bulk_load import bulk_load
from services.cluster.compose import launch as compose_launch
from services.cluster.netns import choose_net
from services.cluster.shard_changes import add_shard, remove_shard
from services.cluster.state import ClusterState, require_state
from services.cluster.switchover import switchover
from services.cluster.topology import COMPOSE, ClusterSpec
from services.render import topology_svg


def compose_up(args: argparse.Namespace) -> int:
    if args.tls or args.with_prometheus:
        print("bankctl: --engine compose serves without TLS and always runs Prometheus", file=sys.stderr)
        return 2
    spec = ClusterSpec(
        dcs=args.dcs, shards=args.shards, net=COMPOSE, name=args.name, octet=args.octet,
        time_zone=args.time_zone, day_seconds=args.day_seconds,
    )  # fmt: skip
    state = compose_launch.up(args.home, spec, say, client_rate_per_s=args.client_rate)
    print(status.render(status.collect(state)))
    return 0


def say_to_stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.command == "up" and args.engine == "compose":
        return compose_up(args)
    if args.command == "up":
        spec = ClusterSpec(
            dcs=args.dcs, shards=args.shards, net=choose_net(args.net), name=args.name, octet=args.octet,
            tls=args.tls, time_zone=args.time_zone, day_seconds=args.day_seconds,
        )  # fmt: skip
        state = launcher.up(
            args.home, spec, say, client_rate_per_s=args.client_rate, with_prometheus=args.with_prometheus
        )
        print(status.render(status.collect(state)))
        return 0
    if args.command == "status":
        report = status.collect(require_state(args.home))
        print(json.dumps(report, indent=2) if args.json else status.render(report))
        if args.svg:
            args.svg.write_text(topology_svg.render(topology_svg.picture_of_status(report)), encoding="utf-8")
            print(f"picture of the cluster: {args.svg}", file=sys.stderr if args.json else sys.stdout)
        healthy = all(c["healthy"] for c in report["components"])
        return 0 if healthy else 1
    if args.command == "down":
        recorded = ClusterState.load(args.home)
        if recorded is not None and recorded.engine == "compose":
            compose_launch.down(args.home, say)
        else:
            launcher.down(args.home, say)
        return 0
    if args.command == "check":
        report = check.check(require_state(args.home), wait_s=args.wait)
        print(json.dumps(report, indent=2) if args.json else check.render(report))
        return 0 if report["reconciled"] else 1
    if args.command == "restart-node":
        dc_lifecycle.restart_node(args.home, args.dc, say)
        return 0
    if args.command == "chaos":
        return chaos(args)
    if args.command == "day":
        state = require_state(args.home)
        tell = say_to_stderr if args.json else say  # with --json, stdout holds the JSON alone
        shown = day_status.close_now(state, tell) if args.action == "close" else day_status.day_status(state)
        print(json.dumps(shown, indent=2) if args.json else day_status.render(shown))
        return 0
    if args.command == "load-accounts":
        path = bulk_load(
            require_state(args.home), args.count, args.balance, args.currency, say, wait_s=args.wait
        )
        say(f"account numbers appended to {path}")
        return 0
    if args.command == "move-slots":
        state = require_state(args.home)
        if args.resume:
            records = slot_moves.resume(state, say)
            say(f"{len(records)} move(s) left half way, each finished or rolled back")
            if args.json:
                print(json.dumps(records, indent=2))
            return 0
        if args.slots is None or args.to_shard is None:
            raise ValueError("move-slots needs --slots A-B and --to SHARD (or --resume)")
        first, last = slot_moves.parse_slots(args.slots)
        record = slot_moves.move_slots(state, first, last, args.to_shard, say)
        if args.json:
            print(json.dumps(record, indent=2))
        return 0
    if args.command == "add-shard":
        added = add_shard(args.home, args.primary_dc, say)
        if args.json:
            print(json.dumps(added, indent=2))
        return 0
    if args.command == "remove-shard":
        removed = remove_shard(args.home, args.shard, args.batch, say)
        if args.json:
            print(json.dumps(removed, indent=2))
        return 0
    if args.command == "rebalance":
        records = slot_moves.rebalance(require_state(args.home), args.batch, say)
        if args.json:
            print(json.dumps(records, indent=2))
        return 0
    if args.command == "switchover":
        switchover(require_state(args.home), args.shard, args.to_dc, say)
        return 0
    if args.command == "drill":
        return drill(args)
    raise AssertionError(args.command)


def progress_to(stream: TextIO) -> Callable[[str], None]:
    """`say` to `stream`: with --json, progress goes to stderr and stdout holds only the JSON."""

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=stream, flush=True)

    return progress


def drill(args: argparse.Namespace) -> int:
    """With --json the progress goes to stderr and stdout holds only the scorecard."""
    from services.chaos import drill as cut_drill

    if args.hold_s <= 0 or args.threads < 1:
        raise ValueError("--for must be above 0 seconds and --threads at least 1")

    progress = progress_to(sys.stderr if args.json else sys.stdout)
    state = require_state(args.home)
    result = cut_drill.drill(
        state, args.cut, args.dc, args.hold_s, args.switch_back, progress, args.threads, args.route
    )
    print(json.dumps(result, indent=2) if args.json else cut_drill.render(result))
    return 0 if result["ok"] else 1


def chaos(args: argparse.Namespace) -> int:
    state = require_state(args.home)
    if args.fault == "heal":
        healed = faults.heal(state, say)
        if args.json:
            print(json.dumps(healed, indent=2))
        return 0
    if args.fault == "run":
        return chaos_run(state, args)
    if args.fault == "restart-dc":
        faults.restart(state, args.dc, say)
        return 0
    options = {k: v for k, v in vars(args).items() if k in ("dc", "other", "seconds", "delay_ms")}
    entry = faults.inject(state, args.fault, options, say)
    if args.json:
        print(json.dumps(entry, indent=2))
    return 0 if all(v is not None for v in entry["shards"].values()) else 1


def chaos_run(state: ClusterState, args: argparse.Namespace) -> int:
    """With --json the progress goes to stderr and stdout holds only the verdict."""
    from services.chaos import run

    if args.minutes <= 0 or args.threads < 1:
        raise ValueError("--minutes must be above 0 and --threads at least 1")

    progress = progress_to(sys.stderr if args.json else sys.stdout)
    verdict = run.run(state, args.seed, args.minutes, progress, threads=args.threads, steps=args.steps)
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        print(run.render(verdict))
    return 0 if verdict["ok"] else 1
