"""Runs a bank-node: `python -m services.node --shard 0 --conninfo-file F --listen HOST:PORT`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from services.common import logs
from services.node.server import BankNode, NodeConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bank-node", description=__doc__)
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument(
        "--conninfo-file", type=Path, required=True, help="file holding the libpq conninfo of the primary"
    )
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--dc", default="")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--port-file", type=Path, help="where to write the port once serving")
    args = parser.parse_args(argv)
    logs.configure("node", dc=args.dc, shard=str(args.shard), level=args.log_level)

    conninfo = args.conninfo_file.read_text(encoding="utf-8").strip()
    node = BankNode(NodeConfig(shard_id=args.shard, conninfo=conninfo, listen=args.listen))
    port = node.start()
    if args.port_file:
        # Written whole and then renamed, so that the launcher never reads half a number.
        partial = args.port_file.with_suffix(".partial")
        partial.write_text(str(port), encoding="ascii")
        partial.rename(args.port_file)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
