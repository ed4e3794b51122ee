"""`bankctl`: the command line of the bank simulator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli import bank_commands
from services.common.errors import BankError
from services.cost.model import Assumptions
from services.host.processes import LaunchError
from services.moves.journal import MoverBusy, MoveTakenOver
from services.moves.mover import MoveFailed, MoveLeft


def add_global_options(parser: argparse.ArgumentParser, default: bool) -> None:
    """The options every command takes, before or after its name (as git and kubectl users
    expect); given after, they override; only the top level holds the default."""
    parser.add_argument(
        "--home", type=Path, default=Path(".bank") if default else argparse.SUPPRESS,
        help="where state, data and logs live (default .bank/)",
    )  # fmt: skip


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _build_commands()
    add_global_options(parser, default=True)
    for sub in _subparsers(parser):
        add_global_options(sub, default=False)
    return parser


def _build_commands() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bankctl", description="Run and inspect the bank simulator.")
    commands = parser.add_subparsers(dest="command", required=True)
    tour = commands.add_parser(
        "tour",
        help="start one shard on its own PostgreSQL, run a scripted banking session, stop everything",
    )
    tour.add_argument("--keep-data", action="store_true", help="keep the shard's data directory afterwards")

    up = commands.add_parser("up", help="start a whole cluster and return once it is healthy")
    up.add_argument("--dcs", type=int, default=3, help="data centers (3-9, default 3)")
    up.add_argument("--shards", type=int, default=3, help="shards (default 3)")
    up.add_argument(
        "--net",
        choices=["auto", "netns", "loopback"],
        default="auto",
        help="netns: a network namespace per DC (root); loopback: a 127.x address per DC;"
        " auto (default): netns when possible",
    )
    up.add_argument(
        "--engine",
        choices=["processes", "compose"],
        default="processes",
        help="processes (default): the launcher's own processes; compose: Docker's containers of"
        " deploy/docker-compose.yml (the engine started and the image built when missing)",
    )
    up.add_argument(
        "--with-prometheus", action="store_true", help="also start Prometheus scraping every service"
    )
    up.add_argument(
        "--tls", action="store_true", help="gateways and bank-nodes serve TLS only (certificates made by up)"
    )
    up.add_argument(
        "--client-rate", type=float, default=5000.0, metavar="PER_S",
        help="requests a second allowed to the client credential (default 5000; 0: no limit)",
    )  # fmt: skip
    up.add_argument(
        "--name", default="bank", help=argparse.SUPPRESS
    )  # namespaces' prefix (tests run beside users)
    up.add_argument("--octet", type=int, default=0, help=argparse.SUPPRESS)  # address range of the cluster
    up.add_argument(
        "--day-seconds", type=float, default=0.0, metavar="S",
        help="compressed business days of S seconds each (demos, tests); default 0: real days",
    )  # fmt: skip
    up.add_argument(
        "--time-zone",
        default="Asia/Shanghai",
        help="where a real business day ends at midnight (default %(default)s)",
    )

    day = commands.add_parser("day", help="the business date, the next cutoff and each shard's date")
    day.add_argument(
        "action", nargs="?", choices=["show", "close"], default="show",
        help="show (default), or close: end the business date now and wait for every shard's cut",
    )  # fmt: skip
    day.add_argument("--json", action="store_true")

    status = commands.add_parser(
        "status", help="show DCs, components, roles, shard primaries and replication"
    )
    status.add_argument("--json", action="store_true", help="print JSON (a stable shape for tools)")
    status.add_argument(
        "--svg", type=Path, metavar="FILE", help="also draw the cluster as it is now (leaders, faults) as SVG"
    )

    commands.add_parser(
        "down", help="stop every process (or container) the cluster started and remove its data"
    )

    check = commands.add_parser("check", help="reconcile the whole bank (exit 1 when it does not)")
    check.add_argument("--json", action="store_true")
    check.add_argument("--wait", type=float, default=0.0, help="read again until settled, up to SECONDS")

    restart = commands.add_parser("restart-node", help="stop (if running) and start a DC's bank-node again")
    restart.add_argument("dc")

    load = commands.add_parser("load-accounts", help="open many funded accounts at once (written by COPY)")
    load.add_argument("--count", type=int, default=100_000)
    load.add_argument("--balance", type=int, default=1_000_000, help="opening balance in minor units")
    load.add_argument("--currency", default="CNY")
    load.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for a slot mover, or a move left half way, to finish",
    )

    for name, text in (
        ("scenario", "run a bounded Locust scenario on the running cluster and write its report"),
        ("demo", "the main job: up, load accounts, a DC failure under load, report, down"),
    ):
        run = commands.add_parser(name, help=text)
        if name == "scenario":
            run.add_argument("kind", choices=["steady", "dc-failover"])
        else:
            run.add_argument("--accounts", type=int, default=100_000)
            run.add_argument("--net", choices=["auto", "netns", "loopback"], default="auto")
        seconds = 90 if name == "scenario" else 195
        run.add_argument("--duration", type=int, default=seconds, help=f"seconds of load (default {seconds})")
        run.add_argument("--users", type=int, default=24, help="Locust users (default 24)")
        run.add_argument("--fault-at", type=float, default=30.0, help="seconds into the run to kill a DC")
        run.add_argument("--restart-at", type=float, default=55.0, help="seconds into the run to restart it")
        run.add_argument("--dc", help="the DC to kill (default: the leader of shard 0)")
        grow_at = None if name == "scenario" else 90.0
        run.add_argument(
            "--scale-out-at", type=float, default=grow_at,
            help=f"seconds into the run to add a shard and rebalance onto it (default {grow_at or 'never'})",
        )  # fmt: skip
        run.add_argument("--scale-out-batch", type=int, default=32, help="slots per move (default 32)")
        run.add_argument(
            "--route", choices=("gateway", "direct"), default="gateway",
            help="how Locust's users reach the shards: through the gateways (default), or routed by"
            " the client library itself to each shard's leader node",
        )  # fmt: skip
        run.add_argument(
            "--reports", type=Path, default=Path("reports"), help="where reports/<timestamp>/ go"
        )
        for field, default in Assumptions().__dict__.items():
            run.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default,
                             help=f"cost model (default {default})")  # fmt: skip

    bench = commands.add_parser(
        "bench", help="pgbench against the full path and the batch API on a fresh cluster (make bench)"
    )
    bench.add_argument("--seconds", type=float, default=15.0, help="per phase (default 15)")
    bench.add_argument(
        "--concurrency", type=lambda text: [int(x) for x in text.split(",")], default=[8, 32, 64, 128],
        help="client threads of the single-transfer phases (default 8,32,64,128)",
    )  # fmt: skip
    bench.add_argument("--accounts", type=int, default=30_000, help="accounts loaded first (default 30,000)")
    bench.add_argument("--net", choices=["auto", "netns", "loopback"], default="auto")
    bench.add_argument("--no-group-commit", action="store_true", help="bank-nodes commit each write alone")
    bench.add_argument("--profile", action="store_true", help="py-spy the shard-0 leader and a gateway")
    bench.add_argument(
        "--reports", type=Path, default=Path("reports"), help="where bench/<timestamp>.json goes"
    )

    grow = commands.add_parser(
        "add-shard",
        help="add a shard (a PostgreSQL group in every DC) while the bank serves; it owns no slot yet",
    )
    grow.add_argument("--primary-dc", metavar="DC", help="where its primary goes (default: round-robin)")
    grow.add_argument("--json", action="store_true", help="print the new shard as JSON")

    shrink = commands.add_parser(
        "remove-shard", help="move a shard's slots to the others, then retire it (its data stays until down)"
    )
    shrink.add_argument("shard", type=int)
    shrink.add_argument("--batch", type=int, default=32, help="slots per move (default 32)")
    shrink.add_argument("--json", action="store_true", help="print the moves and the shards left as JSON")

    move = commands.add_parser(
        "move-slots", help="move a range of slots to another shard while the bank serves (copy, freeze, flip)"
    )
    move.add_argument("--slots", metavar="A-B", help="the slots to move, all on one shard")
    move.add_argument("--to", type=int, dest="to_shard", metavar="SHARD")
    move.add_argument(
        "--resume", action="store_true", help="only finish (or roll back) the moves a mover left half way"
    )
    move.add_argument("--json", action="store_true", help="print the move's journal record as JSON")

    balance = commands.add_parser(
        "rebalance", help="move batches of slots, one at a time, until every shard owns an equal share"
    )
    balance.add_argument("--batch", type=int, default=32, help="slots per move (default 32)")
    balance.add_argument("--json", action="store_true", help="print the moves' journal records as JSON")

    switch = commands.add_parser("switchover", help="move a shard's leader to another DC, losing no request")
    switch.add_argument("shard", type=int)
    switch.add_argument("--to", required=True, dest="to_dc", metavar="DC")

    drill = commands.add_parser(
        "drill",
        help="cut a DC off under load; score automatic switch and recovery, zero loss and interruption",
    )
    drill.add_argument(
        "--cut", choices=["kill", "isolate"], required=True, help="kill its processes, or cut its link"
    )
    drill.add_argument("--dc", required=True, help="the DC to cut")
    drill.add_argument("--for", type=float, default=20.0, dest="hold_s", metavar="S",
                       help="seconds from the cut to the heal (default 20)")  # fmt: skip
    drill.add_argument(
        "--switch-back", action="store_true", help="once whole again, lead where it led before"
    )
    drill.add_argument("--threads", type=int, default=8, help="workload threads (default 8)")
    drill.add_argument(
        "--route", choices=("gateway", "direct"), default="gateway",
        help="the workload's calls through the gateways (default) or routed by the client to the leaders",
    )  # fmt: skip
    drill.add_argument("--json", action="store_true", help="print the scorecard as JSON")

    chaos = commands.add_parser("chaos", help="inject a fault (Jepsen's vocabulary) and measure recovery")
    chaos.add_argument("--json", action="store_true", help="print the fault's record as JSON")
    faults = chaos.add_subparsers(dest="fault", required=True)
    for name, text in (
        ("kill-dc", "SIGKILL every process of a DC"),
        ("restart-dc", "start again every process of a killed DC"),
        ("isolate-dc", "cut a DC off the network (netns only)"),
        ("kill-node", "SIGKILL a DC's bank-node"),
        ("pause-node", "SIGSTOP a DC's bank-node, SIGCONT after --seconds"),
    ):
        one = faults.add_parser(name, help=text)
        one.add_argument("dc")
        if name == "pause-node":
            one.add_argument("--seconds", type=float, required=True)
    for name, text in (
        ("partition", "drop all traffic between two DCs (netns only)"),
        ("slow-link", "add --delay-ms to every gRPC hop between two DCs"),
    ):
        two = faults.add_parser(name, help=text)
        two.add_argument("dc")
        two.add_argument("other")
        if name == "slow-link":
            two.add_argument("--delay-ms", type=int, required=True)
    faults.add_parser("kill-zk-leader", help="SIGKILL the ZooKeeper leader")
    faults.add_parser("kill-redis-primary", help="SIGKILL the Redis primary")
    faults.add_parser("heal", help="undo every fault still active")
    run = faults.add_parser(
        "run", help="a seeded schedule of faults under a bank workload, with the invariants checked"
    )
    run.add_argument("--seed", type=int, required=True, help="the same seed draws the same schedule")
    run.add_argument("--minutes", type=float, default=2.0, help="length of the run (default 2)")
    run.add_argument("--threads", type=int, default=8, help="workload threads (default 8)")
    run.add_argument(
        "--step", action="append", dest="steps", metavar="FAULT",
        help="run this fault as a step instead of the seed's draw, e.g. 'kill-dc dc2' or 'move-slots"
        " cut=kill-source-dc at=freeze' (repeat it; the run ends after the last step)",
    )  # fmt: skip
    run.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the verdict as JSON"
    )
    bank_commands.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tour":
            from services.cli.tour import run_tour

            return run_tour(args.home, keep_data=args.keep_data)
        if args.command in (
            "up",
            "status",
            "down",
            "check",
            "restart-node",
            "chaos",
            "switchover",
            "drill",
            "load-accounts",
            "move-slots",
            "rebalance",
            "add-shard",
            "remove-shard",
            "day",
        ):
            from services.cli import cluster_commands

            return int(cluster_commands.run(args))
        if args.command == "bench":
            from services.cli import bench
            from services.cli.cluster_commands import say

            return bench.run(args, say)
        if args.command in bank_commands.COMMANDS:
            return bank_commands.run(args)
        if args.command in ("scenario", "demo"):
            from services.cli import demo

            return demo.run(args)
    except (
        LaunchError,
        ValueError,
        TimeoutError,
        BankError,
        MoveFailed,
        MoveLeft,
        MoveTakenOver,
        MoverBusy,
    ) as err:
        print(f"bankctl: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bankctl: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
