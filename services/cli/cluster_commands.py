"""`bankctl up`, `status` and `down`."""

from __future__ import annotations

import argparse
import json
import time

from services.cluster import check, launcher, status
from services.cluster.netns import choose_net
from services.cluster.topology import ClusterSpec


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.command == "up":
        spec = ClusterSpec(
            dcs=args.dcs, shards=args.shards, net=choose_net(args.net), name=args.name, octet=args.octet
        )
        state = launcher.up(args.home, spec, say)
        print(status.render(status.collect(state)))
        return 0
    if args.command == "status":
        report = status.collect(launcher.require_state(args.home))
        print(json.dumps(report, indent=2) if args.json else status.render(report))
        healthy = all(c["healthy"] for c in report["components"])
        return 0 if healthy else 1
    if args.command == "down":
        launcher.down(args.home, say)
        return 0
    if args.command == "check":
        report = check.check(launcher.require_state(args.home), wait_s=args.wait)
        print(json.dumps(report, indent=2) if args.json else check.render(report))
        return 0 if report["reconciled"] else 1
    if args.command == "restart-node":
        launcher.restart_node(args.home, args.dc, say)
        return 0
    raise AssertionError(args.command)
