"""`bankctl`: the command line of the bank simulator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cluster.processes import LaunchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bankctl", description="Run and inspect the bank simulator.")
    parser.add_argument(
        "--home", type=Path, default=Path(".bank"), help="where state, data and logs live (default .bank/)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tour = commands.add_parser(
        "tour",
        help="start one shard on its own PostgreSQL, run a scripted banking session, stop everything",
    )
    tour.add_argument("--keep-data", action="store_true", help="keep the shard's data directory afterwards")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tour":
            from services.cli.tour import run_tour

            return run_tour(args.home, keep_data=args.keep_data)
    except LaunchError as err:
        print(f"bankctl: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bankctl: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
