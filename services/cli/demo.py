"""`bankctl scenario` on a running cluster, and `bankctl demo` (what `make run` runs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from loadtest.report import summary_rows
from services.chaos.faults import leaders
from services.cli.cluster_commands import say
from services.cli.scenario import run_scenario
from services.cluster import launcher
from services.cluster.bulk_load import bulk_load
from services.cluster.netns import choose_net
from services.cluster.state import ClusterState, require_state
from services.cluster.topology import ClusterSpec
from services.cost.model import Assumptions
from services.host.processes import LaunchError


def _assumptions(args: argparse.Namespace) -> Assumptions:
    return Assumptions(**{field: getattr(args, field) for field in Assumptions().__dict__})


def _scenario(state: ClusterState, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    if not 10 <= args.duration <= 3600:
        raise ValueError(f"--duration must be 10..3600 seconds, not {args.duration}")
    fault_dc = None
    if kind == "dc-failover":
        if not 0 < args.fault_at < args.restart_at < args.duration:
            raise ValueError("need 0 < --fault-at < --restart-at < --duration")
        fault_dc = args.dc or leaders(state)[0]
    out = args.reports / time.strftime("%Y%m%d-%H%M%S")
    if args.scale_out_at is not None and not 0 < args.scale_out_at < args.duration:
        raise ValueError("need 0 < --scale-out-at < --duration")
    return run_scenario(
        state, kind, args.duration, args.users, out, say, fault_dc=fault_dc, fault_at_s=args.fault_at,
        restart_at_s=args.restart_at, assumptions=_assumptions(args), scale_out_at_s=args.scale_out_at,
        scale_out_batch=args.scale_out_batch, route=args.route,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    data = _scenario(require_state(args.home), args, args.kind) if args.command == "scenario" else demo(args)
    width = max(len(k) for k, _ in summary_rows(data))
    print()
    for key, value in summary_rows(data):
        print(f"  {key:<{width}}  {value}")
    print(f"\nreport: {Path(args.reports).resolve() / data['run_id'] / 'report.html'}")
    return 0 if data["invariant_ok"] else 1


def demo(args: argparse.Namespace) -> dict[str, Any]:
    existing = ClusterState.load(args.home)
    if existing is not None:
        raise LaunchError(
            f"a cluster is recorded in {args.home}; `bankctl down` it first, or give another --home"
        )
    spec = ClusterSpec(net=choose_net(args.net))
    state = launcher.up(args.home, spec, say)
    try:
        bulk_load(state, args.accounts, 1_000_000, "CNY", say)
        return _scenario(state, args, "dc-failover")
    finally:
        launcher.down(args.home, say)
