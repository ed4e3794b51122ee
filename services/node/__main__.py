"""Runs a bank-node: `python -m services.node --config FILE [--port-file F] [--dc DC]`.

The config file (JSON, private: it holds database passwords) names the shards this node leads
with the conninfo of each primary, the slot ranges of every shard, and the address to serve.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType

from services.common import logs
from services.node.server import BankNode, NodeConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bank-node", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--dc", default="")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--port-file", type=Path, help="where to write the port once serving")
    args = parser.parse_args(argv)
    config = NodeConfig.from_json(json.loads(args.config.read_text(encoding="utf-8")))
    logs.configure("node", dc=args.dc, shard=",".join(map(str, sorted(config.shards))), level=args.log_level)

    node = BankNode(config)
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
