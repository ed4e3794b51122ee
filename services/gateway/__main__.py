"""Runs a DC's gateway: `python -m services.gateway --config FILE [--port-file F]`.

The config (JSON) names the address to serve, the DC, its Redis and the ZooKeeper ensemble.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from redis.sentinel import Sentinel

from bank.v1 import account_pb2, account_pb2_grpc, admin_pb2, admin_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from services.common import logs
from services.gateway.admin import AdminServicer
from services.gateway.forwarder import Forwarder
from services.gateway.servicers import ACCOUNTS, LEDGER, GatewayAccountServicer, GatewayLedgerServicer, Router
from services.routing.client import RoutingClient
from services.rpc.auth import ADMIN, CLIENT, AuthInterceptor, RateLimiter, TokenStore
from services.rpc.metrics import serve_metrics, zero_gateway_series
from services.rpc.server import Registration, start_server
from services.rpc.tls import read

log = logging.getLogger("services.gateway")
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bank-gateway", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text(encoding="utf-8"))
    logs.configure("gateway", dc=config["dc"], level=args.log_level)

    host, port = config["redis_address"].rsplit(":", 1)
    password = config.get("redis_password") or None
    routing = RoutingClient(
        host, int(port), config["zk_hosts"], redis_password=password, zk_auth=config.get("zk_auth", "")
    )
    routing.start()
    tls = config.get("tls")
    forwarder = Forwarder(
        routing,
        dc=config["dc"],
        peer_token=config["peer_token"],
        root_certificates=read((tls or {}).get("ca")),
    )
    router = Router(forwarder)
    sentinels = Sentinel(
        [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in config["sentinels"])],
        sentinel_kwargs={"password": password, "socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        password=password, socket_timeout=1.0, socket_connect_timeout=0.5,
    )  # fmt: skip
    tokens = TokenStore(path=Path(config["tokens_file"]))
    public = {CLIENT, ADMIN}
    # A client that routes itself (BankClient(route="direct")) reads the routing table here.
    topology = f"{ADMIN_SERVICE}/GetTopology"
    roles = {ACCOUNTS: public, LEDGER: public, ADMIN_SERVICE: {ADMIN}, topology: public}
    server = start_server(
        config["listen"],
        [
            Registration(
                account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
                account_pb2_grpc.add_AccountServiceServicer_to_server,
                GatewayAccountServicer(router),
            ),
            Registration(
                ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name,
                ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
                GatewayLedgerServicer(router),
            ),
            Registration(
                ADMIN_SERVICE,
                admin_pb2_grpc.add_AdminServiceServicer_to_server,
                AdminServicer(config["dc"], routing, lambda: sentinels.master_for(config["sentinel_master"])),
            ),
        ],
        # A handler thread per call in flight, waiting for its shard's answer: 64 capped one
        # gateway at 64 transfers on their way (823/s at 64 callers, 1,019/s at 128 with 256).
        max_workers=256,
        interceptors=[AuthInterceptor(tokens, roles, RateLimiter())],
        tls=tls,
    )
    if config.get("metrics_listen"):
        host, metrics_port = config["metrics_listen"].rsplit(":", 1)
        serve_metrics(host, int(metrics_port))
        zero_gateway_series(sorted({shard for _, _, shard in routing.table.slot_ranges}))
    log.info("event=gateway_ready port=%s routing_version=%s", server.port, routing.table.version)
    if args.port_file:
        partial = args.port_file.with_suffix(".partial")
        partial.write_text(str(server.port), encoding="ascii")
        partial.rename(args.port_file)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.server.wait_for_termination()
    forwarder.close()
    routing.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
