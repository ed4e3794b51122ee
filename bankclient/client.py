"""The bank's client library, used by the CLI, the load harness and the tests.

It depends only on the generated stubs. Every call goes to a gateway (the preferred DC's first),
which holds it through a failover until the caller's deadline: the client gives that gateway
the whole deadline, and moves to the next DC's gateway at once when its gateway cannot be
reached (connection refused; or silent: keepalive pings unanswered, a connection attempt with
no answer) or answers UNAVAILABLE, never away from a gateway that is holding. Sending a request
again is safe because every mutating request carries its request id: a retry returns the
first result.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from bank.v1 import account_pb2, account_pb2_grpc, admin_pb2, admin_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from bankclient.coalescing import Closed, Coalescer, NoAnswer, NotSent
from bankclient.direct import REASON_KEY, DirectRouter, slot_of_account

FAILOVER_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
DEFAULT_DEADLINE_S = 5.0
ROUND_BACKOFF_S = 0.1  # doubled after each round in which every gateway answered UNAVAILABLE
# How a gateway that is cut off is told from one that is holding a request: a holding gateway
# answers HTTP/2 pings, a cut-off one does not, and its connection (with the calls on it) fails
# after KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS; a connection attempt that gets no answer gives up
# after CONNECT_TIMEOUT_MS. Gateways accept pings this often (services/rpc/server.py).
KEEPALIVE_MS = 1000
KEEPALIVE_TIMEOUT_MS = 500
CONNECT_TIMEOUT_MS = 1000
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.max_pings_without_data", 0),  # a held call sends no data: ping anyway
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),  # gRPC core's connect timeout
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),  # a gateway back from a restart is used again soon
)
AUTH_HEADER = "authorization"
CREDENTIALS_DIR = "credentials"  # under a cluster's home: <role>.token, written by `bankctl up`
COALESCE_MAX_BATCH = 512  # of a gateway's 4,096 per CreateTransfers call
# Batches on their way at once: two let one be booked while the next travels. 256 callers on
# shard 0 (/tmp quick runs, 15 s each): 1,780 transfers/s with one, 1,976 with two, 2,017 with three.
COALESCE_SENDERS = 2
ROUTES = ("gateway", "direct")
TOPOLOGY_DEADLINE_S = 2.0  # reading the routing table (direct routing)


# method, elapsed ms, the error the caller got (None when it succeeded), the answer
Observer = Callable[[str, float, BaseException | None, Any], None]


class GatewayUnavailable(Exception):
    """No gateway answered within the deadline."""


class Metadatum(NamedTuple):
    """One trailing metadata entry, read as grpc's own are: `m.key`, `m.value`, or unpacked."""

    key: str
    value: str


class TransferRefused(grpc.RpcError):
    """A coalesced transfer's own failure, raised as its own `Transfer` call would have failed:
    `code()`, `details()` and the reason in `trailing_metadata()`."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = "") -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self._reason = code, details, reason

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Metadatum, ...]:
        return (Metadatum(REASON_KEY, self._reason),) if self._reason else ()


_UUID_VERSION_7 = 0x7 << 76
_UUID_RFC_VARIANT = 0b10 << 62


def new_request_id() -> str:
    """A UUID of version 7 (RFC 9562): the time in milliseconds, then 74 random bits.

    A shard keeps every request id it answered in a unique index (its idempotency record). Ids
    that grow with time are added at the end of that index, on pages already in memory; random
    ones (version 4) land on any page of it, and as the index outgrows PostgreSQL's cache each
    insert reads a page back and dirties another (bench/pg_split.py, two runs of each: 0.082,
    0.090-0.098, 0.110-0.112 ms of PostgreSQL CPU a batch transfer in its three phases, against
    0.086, 0.099, 0.120 with version 4 ids).

    Written here rather than taken from the `uuid6` package, whose uuid7() moves its clock on by
    a millisecond for every id asked for within one (100,000 ids made in a third of a second
    ended 100 s ahead of the clock). Python 3.14's uuid.uuid7() is the same layout (3.11's UUID
    knows versions 1 to 5 only: the version and variant bits are set here)."""
    random_bits = secrets.randbits(74)
    value = (
        (time.time_ns() // 1_000_000) << 80  # 48 bits of time
        | _UUID_VERSION_7
        | (random_bits >> 62) << 64  # 12 random bits
        | _UUID_RFC_VARIANT
        | (random_bits & ((1 << 62) - 1))  # 62 random bits
    )
    return str(uuid.UUID(int=value))


def read_ca(home: Path | str) -> bytes | None:
    """The cluster's CA certificate when it serves TLS (`bankctl up --tls`), else None."""
    state = json.loads((Path(home) / "cluster.json").read_text(encoding="utf-8"))
    if not state["spec"].get("tls"):
        return None
    return (Path(home) / CREDENTIALS_DIR / "tls" / "ca.pem").read_bytes()


def read_token(home: Path | str, role: str = "client") -> str:
    """The bearer token `bankctl up` wrote for `role` (client or admin) under the cluster's home."""
    path = Path(home) / CREDENTIALS_DIR / f"{role}.token"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ValueError(f"no {role} credential at {path}; is a cluster up in {home}?") from None


class BankClient:
    def __init__(
        self,
        gateways: Sequence[str],
        prefer: int = 0,
        deadline_s: float = DEFAULT_DEADLINE_S,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
        token: str | None = None,
        root_certificates: bytes | None = None,
        coalesce_transfers: bool = False,
        observer: Observer | None = None,
        route: str = "gateway",
    ) -> None:
        """`coalesce_transfers`: single `transfer()` calls made at the same time from several
        threads travel to the gateway together, as one `CreateTransfers` call (as TigerBeetle's
        clients batch), each caller still getting its own answer or error. `observer` hears of
        every operation once, however many gateways it took (the `interceptors` see each call).
        `route="direct"`: calls go to their shard's leader node itself, by the routing table a
        gateway gives (bankclient/direct.py); the gateways take what a node cannot (coalesced
        transfers then travel together per shard)."""
        self.observer = observer
        if not gateways:
            raise ValueError("at least one gateway address is needed")
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        self.gateways = list(gateways)
        self._metadata = ((AUTH_HEADER, f"Bearer {token}"),) if token else ()
        self.deadline_s = deadline_s
        self._current = prefer % len(self.gateways)
        self._root_certificates, self._interceptors = root_certificates, tuple(interceptors)
        self._raw_channels = [self._open_channel(address) for address in self.gateways]
        channels = [grpc.intercept_channel(c, *interceptors) for c in self._raw_channels]
        self._accounts = [account_pb2_grpc.AccountServiceStub(c) for c in channels]
        self._ledger = [ledger_pb2_grpc.LedgerServiceStub(c) for c in channels]
        self._admin = [admin_pb2_grpc.AdminServiceStub(c) for c in channels]
        self._stubs: dict[str, list[Any]] = {
            "accounts": self._accounts,
            "ledger": self._ledger,
            "admin": self._admin,
        }
        self._lock = threading.Lock()
        self.failovers = 0
        self._coalescer: Coalescer | None = None
        if coalesce_transfers:
            send, most, senders = self._send_transfers, COALESCE_MAX_BATCH, COALESCE_SENDERS
            self._coalescer = Coalescer(send, most, senders, "bankclient")
        self.direct: DirectRouter | None = None
        if route == "direct":
            self.direct = DirectRouter(self._read_topology, self._node_channel, self._metadata)

    def _read_topology(self) -> Any:
        return self._via_gateways("admin", "GetTopology", admin_pb2.GetTopologyRequest(), TOPOLOGY_DEADLINE_S)

    def _node_channel(self, endpoint: str) -> grpc.Channel:
        return grpc.intercept_channel(self._open_channel(endpoint), *self._interceptors)

    def _open_channel(self, address: str) -> grpc.Channel:
        if self._root_certificates:
            credentials = grpc.ssl_channel_credentials(self._root_certificates)
            return grpc.secure_channel(address, credentials, CHANNEL_OPTIONS)
        return grpc.insecure_channel(address, CHANNEL_OPTIONS)

    @classmethod
    def from_home(
        cls, home: Path | str = ".bank", prefer_dc: str | None = None, role: str = "client", **kwargs: Any
    ) -> BankClient:
        """A client of the cluster `bankctl up` recorded in `home`, with its `role`'s credential."""
        state = json.loads((Path(home) / "cluster.json").read_text(encoding="utf-8"))
        gateways = [c for c in state["components"] if c["kind"] == "gateway"]
        if not gateways:
            raise ValueError(f"the cluster in {home} has no gateway")
        prefer = next((i for i, c in enumerate(gateways) if c["dc"] == prefer_dc), 0)
        kwargs.setdefault("token", read_token(home, role))
        kwargs.setdefault("root_certificates", read_ca(home))
        return cls([f"{c['host']}:{c['port']}" for c in gateways], prefer=prefer, **kwargs)

    def close(self) -> None:
        if self._coalescer is not None:
            self._coalescer.close()
        if self.direct is not None:
            self.direct.close()
        for channel in self._raw_channels:
            channel.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, service: str, method: str, request: Any, deadline_s: float | None = None) -> Any:
        """One operation: its outcome, as the caller sees it, goes to the observer."""
        started = time.perf_counter()
        try:
            answer = self._call(service, method, request, deadline_s)
        except Exception as err:
            if self.observer is not None:
                self.observer(method, (time.perf_counter() - started) * 1000, err, None)
            raise
        if self.observer is not None:
            self.observer(method, (time.perf_counter() - started) * 1000, None, answer)
        return answer

    def _call(self, service: str, method: str, request: Any, deadline_s: float | None) -> Any:
        if self.direct is None or service == "admin":
            return self._via_gateways(service, method, request, deadline_s)
        deadline = time.monotonic() + (deadline_s or self.deadline_s)

        def via_gateways(again: Any, left_s: float) -> Any:
            return self._via_gateways(service, method, again, max(left_s, 0.001))

        return self.direct.call(service, method, request, deadline, via_gateways)

    def _via_gateways(self, service: str, method: str, request: Any, deadline_s: float | None) -> Any:
        """Sends `request` with the whole deadline to the current gateway; moves to the next one when
        it is unreachable (see CHANNEL_OPTIONS) or answers UNAVAILABLE, until the deadline."""
        budget = deadline_s or self.deadline_s
        deadline = time.monotonic() + budget
        index = self._current
        last: grpc.RpcError | None = None
        for attempt in range(4 * len(self.gateways)):  # bounded: a few rounds over every DC
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            stubs = self._stubs[service]
            try:
                answer = getattr(stubs[index], method)(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as err:
                if err.code() not in FAILOVER_CODES:
                    raise
                last = err
                index = (index + 1) % len(self.gateways)
                with self._lock:
                    self._current = index
                    self.failovers += 1
                if (attempt + 1) % len(self.gateways) == 0:  # every DC said no: let the cluster move
                    rounds = (attempt + 1) // len(self.gateways)
                    time.sleep(max(0.0, min(ROUND_BACKOFF_S * 2**rounds, 1.0, deadline - time.monotonic())))
                continue
            return answer
        if last is not None:
            raise last
        raise GatewayUnavailable(
            f"no gateway of {self.gateways} answered in {deadline_s or self.deadline_s} s"
        )

    # The contract's calls, with request ids made here when the caller gives none.

    def open_account(self, customer_id: str, currency: str, request_id: str | None = None) -> Any:
        request = account_pb2.OpenAccountRequest(
            request_id=request_id or new_request_id(), customer_id=customer_id, currency=currency
        )
        return self.call("accounts", "OpenAccount", request).account

    def get_account(self, account_number: str) -> Any:
        return self.call(
            "accounts", "GetAccount", account_pb2.GetAccountRequest(account_number=account_number)
        ).account

    def deposit(self, account: str, amount: int, currency: str, request_id: str | None = None) -> Any:
        request = ledger_pb2.DepositRequest(
            request_id=request_id or new_request_id(),
            account_number=account,
            amount=amount,
            currency=currency,
        )
        return self.call("ledger", "Deposit", request)

    def withdraw(self, account: str, amount: int, currency: str, request_id: str | None = None) -> Any:
        request = ledger_pb2.WithdrawRequest(
            request_id=request_id or new_request_id(),
            account_number=account,
            amount=amount,
            currency=currency,
        )
        return self.call("ledger", "Withdraw", request)

    def transfer(
        self, source: str, target: str, amount: int, currency: str, request_id: str | None = None,
        deadline_s: float | None = None,
    ) -> Any:  # fmt: skip
        request = ledger_pb2.TransferRequest(
            request_id=request_id or new_request_id(), from_account=source, to_account=target, amount=amount,
            currency=currency,
        )  # fmt: skip
        if self._coalescer is None:
            return self.call("ledger", "Transfer", request, deadline_s)
        # Directly routed, the transfers of one shard travel together (to its leader).
        shard = self.direct.shard_of(slot_of_account(source)) if self.direct is not None else None
        try:
            result = self._coalescer.submit(
                shard, request, time.monotonic() + (deadline_s or self.deadline_s)
            )
        except (NotSent, NoAnswer) as late:
            raise TransferRefused(grpc.StatusCode.DEADLINE_EXCEEDED, str(late)) from None
        except Closed as closed:
            raise TransferRefused(grpc.StatusCode.CANCELLED, str(closed)) from None
        if result.code != "OK":
            code = getattr(grpc.StatusCode, result.code, grpc.StatusCode.UNKNOWN)
            raise TransferRefused(code, result.message, result.reason)
        return ledger_pb2.TransferResponse(
            transfer_id=result.transfer_id, status=result.status, transfer=result.transfer
        )

    def _send_transfers(self, key: Any, requests: list[Any], latest: float) -> list[Any]:
        """Coalesced transfers as one batch; a failure of the whole call is raised to each caller."""
        remaining = latest - time.monotonic()
        if remaining <= 0:
            raise TransferRefused(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before sending")
        batch = ledger_pb2.CreateTransfersRequest(transfers=requests, full_transfers=True)
        return list(self.call("ledger", "CreateTransfers", batch, remaining).results)

    def create_transfers(
        self, transfers: Sequence[tuple[str, str, int, str, str]], deadline_s: float | None = None
    ) -> list[Any]:
        """A batch of (source, target, amount, currency, request id); one result per transfer,
        in order (`code` "OK" with its `transfer_id`, or the status it alone would have got)."""
        request = ledger_pb2.CreateTransfersRequest(
            transfers=[
                ledger_pb2.TransferRequest(
                    request_id=request_id,
                    from_account=source,
                    to_account=target,
                    amount=amount,
                    currency=currency,
                )
                for source, target, amount, currency, request_id in transfers
            ]
        )
        return list(self.call("ledger", "CreateTransfers", request, deadline_s).results)

    def get_transfer(self, transfer_id: str) -> Any:
        return self.call(
            "ledger", "GetTransfer", ledger_pb2.GetTransferRequest(transfer_id=transfer_id)
        ).transfer

    def freeze(self, account: str, request_id: str | None = None) -> Any:
        request = account_pb2.FreezeAccountRequest(
            request_id=request_id or new_request_id(), account_number=account
        )
        return self.call("accounts", "FreezeAccount", request).account

    # AdminService: an admin credential only.

    def get_topology(self) -> Any:
        return self.call("admin", "GetTopology", admin_pb2.GetTopologyRequest())

    def set_link_delay(self, dc: str, other_dc: str, delay_ms: int) -> Any:
        request = admin_pb2.SetLinkDelayRequest(dc=dc, other_dc=other_dc, delay_ms=delay_ms)
        return self.call("admin", "SetLinkDelay", request)
