"""The bank-node of one shard: migrations, the ledger's services over gRPC, the hold sweeper."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from bank.v1 import account_pb2, account_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from services.account.handler import AccountHandler
from services.account.servicer import AccountServicer
from services.common.errors import BankError
from services.ledger.handler import LedgerHandler
from services.ledger.servicer import LedgerServicer
from services.rpc.server import Registration, RunningServer, start_server
from services.storage.ledger_store import LedgerStore
from services.storage.migrate import apply_migrations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    shard_id: int
    conninfo: str
    listen: str = "127.0.0.1:0"
    pool_max: int = 16
    sweep_interval_s: float = 1.0


class BankNode:
    """Serves one shard's AccountService and LedgerService from its PostgreSQL primary."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = LedgerStore(config.conninfo, max_size=config.pool_max)
        self.accounts = AccountHandler(self.store)
        self.ledger = LedgerHandler(self.store)
        self._server: RunningServer | None = None
        self._stopping = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_holds, name="hold-sweeper", daemon=True)

    @property
    def port(self) -> int:
        assert self._server is not None, "the node is not started"
        return self._server.port

    def start(self) -> int:
        applied = apply_migrations(self.config.conninfo, self.config.shard_id)
        self.store.open()
        self._server = start_server(
            self.config.listen,
            [
                Registration(
                    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
                    account_pb2_grpc.add_AccountServiceServicer_to_server,
                    AccountServicer(self.accounts),
                ),
                Registration(
                    ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name,
                    ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
                    LedgerServicer(self.ledger),
                ),
            ],
        )
        self._sweeper.start()
        log.info(
            "event=node_ready shard=%s port=%s migrations_applied=%s",
            self.config.shard_id,
            self._server.port,
            ",".join(applied) or "none",
        )
        return self._server.port

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
        self.store.close()
        log.info("event=node_stopped shard=%s", self.config.shard_id)

    def wait(self) -> None:
        assert self._server is not None
        self._server.server.wait_for_termination()

    def _sweep_holds(self) -> None:
        """Releases expired holds in the background; reads already treat them as released."""
        while not self._stopping.wait(self.config.sweep_interval_s):
            try:
                released = self.ledger.release_expired_holds()
            except BankError as err:
                log.warning("event=hold_sweep_failed error=%r", err.message)
                continue
            if released:
                log.info("event=holds_expired accounts=%s", released)
