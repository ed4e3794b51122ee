"""The client's direct routing (bankclient/direct.py) against fake nodes: where a call goes, what a
refusal or a silent node does, how a batch is split and put back together. The same behaviour
against a real cluster: tests/integration/test_direct_routing.py."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
import pytest

from bank.v1 import admin_pb2, ledger_pb2
from bankclient import direct
from bankclient.direct import DirectRouter
from services.common import identifiers
from services.common.errors import InvalidArgument


class Metadatum(NamedTuple):
    key: str
    value: str


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, reason: str = "") -> None:
        super().__init__(code.name)
        self._code, self._reason = code, reason

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._reason

    def trailing_metadata(self) -> tuple[Metadatum, ...]:
        return (Metadatum(direct.REASON_KEY, self._reason),) if self._reason else ()


class FakeNode:
    """A channel whose every call is answered by `answer(method, request, metadata)`."""

    def __init__(self, endpoint: str, answer: Callable[[str, Any, dict[str, str]], Any]) -> None:
        self.endpoint, self.answer = endpoint, answer
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.closed = False

    def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        method = path.rsplit("/", 1)[1]

        def call(request: Any, timeout: float | None = None, metadata: Any = ()) -> Any:
            if self.closed:
                raise ValueError("closed channel")
            self.calls.append((method, request, dict(metadata)))
            return self.answer(method, request, dict(metadata))

        return call

    def close(self) -> None:
        self.closed = True


def topology(version: int, leaders: dict[int, tuple[str, int]], split: int = 512) -> Any:
    """Two shards: slots below `split` on shard 0, the rest on shard 1."""
    return admin_pb2.GetTopologyResponse(
        routing_version=version,
        leaders=[admin_pb2.ShardLeader(shard=s, endpoint=e, epoch=n) for s, (e, n) in leaders.items()],
        slots=[
            admin_pb2.SlotRange(first_slot=0, last_slot=split - 1, shard=0),
            admin_pb2.SlotRange(first_slot=split, last_slot=1023, shard=1),
        ],
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Bank:
    """A router over fake nodes; `tables` are answered in turn by each read of the table."""

    def __init__(self, tables: list[Any], answer: Callable[[str, Any, dict[str, str]], Any]) -> None:
        self.tables, self.reads = tables, 0
        self.nodes: dict[str, FakeNode] = {}
        self.clock = Clock()
        self.fallbacks: list[Any] = []
        self.router = DirectRouter(self._read, self._open, (("authorization", "Bearer t"),), self.clock)
        self._answer = answer

    def _read(self) -> Any:
        table = self.tables[min(self.reads, len(self.tables) - 1)]
        self.reads += 1
        return table

    def _open(self, endpoint: str) -> Any:
        node = self.nodes[endpoint] = FakeNode(endpoint, self._answer)
        return node

    def fallback(self, request: Any, left_s: float) -> Any:
        self.fallbacks.append(request)
        if isinstance(request, ledger_pb2.CreateTransfersRequest):
            return ledger_pb2.CreateTransfersResponse(
                results=[
                    ledger_pb2.TransferResult(code="OK", transfer_id="via-gateway") for _ in request.transfers
                ]
            )
        return "via-gateway"

    def call(self, method: str, request: Any) -> Any:
        return self.router.call("ledger", method, request, self.clock() + 5, self.fallback)


def account(slot: int, serial: int = 7) -> str:
    return identifiers.make_account_number(slot, serial)


def transfer(slot: int, target_slot: int = 3) -> ledger_pb2.TransferRequest:
    return ledger_pb2.TransferRequest(
        request_id=f"r{slot}",
        from_account=account(slot),
        to_account=account(target_slot),
        amount=1,
        currency="CNY",
    )


def test_slots_are_read_as_the_bank_reads_them() -> None:
    rng = random.Random(16)
    assert direct.NUM_SLOTS == identifiers.NUM_SLOTS
    for _ in range(2000):
        slot = rng.randrange(identifiers.NUM_SLOTS)
        number = identifiers.make_account_number(slot, rng.randrange(1, 10**identifiers.SERIAL_DIGITS))
        assert direct.slot_of_account(number) == identifiers.parse_account_number(number) == slot
        customer = f"cust-{rng.getrandbits(40):x}"
        assert direct.slot_of_customer(customer) == identifiers.slot_of_customer(customer)
        for made, parse in (
            (identifiers.new_transfer_id, identifiers.parse_transfer_id),
            (identifiers.new_hold_id, identifiers.parse_hold_id),
        ):
            assert direct.slot_of_id(made(slot)) == parse(made(slot)) == slot
    for bad in ("", "123", "9999" + "0" * 12, "x" * 16, "T9999-" + "0" * 32, "T0001-short"):
        assert direct.slot_of_account(bad) is None and direct.slot_of_id(bad) is None
        for parse in (identifiers.parse_account_number, identifiers.parse_transfer_id):
            with pytest.raises(InvalidArgument):
                parse(bad)


def test_a_call_goes_to_its_shards_leader_with_the_routes_epoch() -> None:
    bank = Bank([topology(1, {0: ("n0:1", 4), 1: ("n1:1", 9)})], lambda m, r, md: "from-node")
    assert bank.call("Transfer", transfer(700)) == "from-node"
    assert bank.call("Deposit", ledger_pb2.DepositRequest(account_number=account(5))) == "from-node"
    ((method, _, metadata),) = bank.nodes["n1:1"].calls
    assert (method, metadata[direct.EPOCH_KEY], metadata["authorization"]) == ("Transfer", "9", "Bearer t")
    assert [c[0] for c in bank.nodes["n0:1"].calls] == ["Deposit"]
    assert bank.fallbacks == [] and bank.reads == 1


def test_what_cannot_be_routed_goes_to_the_gateways() -> None:
    bank = Bank([topology(1, {0: ("n0:1", 4), 1: ("n1:1", 9)})], lambda m, r, md: "from-node")
    bad = ledger_pb2.TransferRequest(request_id="r", from_account="12", to_account=account(1))
    assert bank.call("Transfer", bad) == "via-gateway"
    assert (
        bank.router.call("admin", "GetTopology", admin_pb2.GetTopologyRequest(), 9.0, bank.fallback)
        == "via-gateway"
    )
    assert bank.nodes == {}


def test_a_refusal_for_the_route_goes_to_the_gateways_and_reads_the_table_again() -> None:
    def answer(method: str, request: Any, metadata: dict[str, str]) -> Any:
        if metadata[direct.EPOCH_KEY] == "4":
            raise Refused(grpc.StatusCode.UNAVAILABLE, "NOT_LEADER")
        return "from-node"

    tables = [topology(1, {0: ("n0:1", 4), 1: ("n1:1", 9)}), topology(2, {0: ("n0:1", 5), 1: ("n1:1", 9)})]
    bank = Bank(tables, answer)
    bank.router.routes()
    bank.clock.now += direct.REFRESH_EVERY_S + 0.001  # (the table is not read again more often than this)
    assert bank.call("Transfer", transfer(1)) == "via-gateway"
    assert bank.reads == 2  # read again at once after the refusal
    bank.clock.now += 1
    assert bank.call("Transfer", transfer(1)) == "from-node"
    assert [c[2][direct.EPOCH_KEY] for c in bank.nodes["n0:1"].calls] == ["4", "5"]


def test_a_bad_request_is_answered_by_the_node_not_sent_again() -> None:
    def answer(method: str, request: Any, metadata: dict[str, str]) -> Any:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")

    bank = Bank([topology(1, {0: ("n0:1", 4), 1: ("n1:1", 9)})], answer)
    with pytest.raises(grpc.RpcError) as refused:
        bank.call("Transfer", transfer(1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bank.fallbacks == []


def test_a_node_that_does_not_answer_is_passed_over_until_the_table_names_another() -> None:
    def answer(method: str, request: Any, metadata: dict[str, str]) -> Any:
        if metadata[direct.EPOCH_KEY] == "4":
            raise Refused(grpc.StatusCode.UNAVAILABLE)  # no reason: not reached at all
        return "from-node"

    same = topology(1, {0: ("n0:1", 4), 1: ("n1:1", 9)})
    tables = [same, same, topology(2, {0: ("n2:1", 5), 1: ("n1:1", 9)})]
    bank = Bank(tables, answer)
    assert bank.call("Transfer", transfer(1)) == "via-gateway"
    assert bank.call("Transfer", transfer(1)) == "via-gateway"  # passed over: not tried again
    assert len(bank.nodes["n0:1"].calls) == 1
    bank.clock.now += direct.SUSPECT_REFRESH_S + 0.001
    assert bank.call("Transfer", transfer(1)) == "via-gateway"  # the table read again: no successor yet
    bank.clock.now += direct.SUSPECT_REFRESH_S + 0.001
    assert bank.call("Transfer", transfer(1)) == "via-gateway"  # read again: its successor, used next
    assert bank.call("Transfer", transfer(1)) == "from-node"
    assert [c[2][direct.EPOCH_KEY] for c in bank.nodes["n2:1"].calls] == ["5"]
    assert bank.nodes["n0:1"].closed  # it leads nothing in the new table


def test_a_batch_is_split_by_shard_and_what_a_node_refuses_goes_to_the_gateways() -> None:
    def answer(method: str, request: Any, metadata: dict[str, str]) -> Any:
        results = []
        for item in request.transfers:
            moving = item.from_account == account(2)
            code, reason = ("UNAVAILABLE", "SLOT_MOVING") if moving else ("OK", "")
            results.append(
                ledger_pb2.TransferResult(
                    code=code, reason=reason, transfer_id=f"{metadata[direct.EPOCH_KEY]}"
                )
            )
        return ledger_pb2.CreateTransfersResponse(results=results)

    bank = Bank([topology(1, {0: ("n0:1", 4), 1: ("n1:1", 9)})], answer)
    batch = ledger_pb2.CreateTransfersRequest(
        transfers=[transfer(1), transfer(600), transfer(2), transfer(3)]
    )
    results = bank.call("CreateTransfers", batch).results
    assert [(r.index, r.code, r.transfer_id) for r in results] == [
        (0, "OK", "4"),
        (1, "OK", "9"),
        (2, "OK", "via-gateway"),  # moving: sent again through a gateway, which holds it
        (3, "OK", "4"),
    ]
    assert [len(c[1].transfers) for c in bank.nodes["n0:1"].calls] == [3]
    assert [[t.from_account for t in f.transfers] for f in bank.fallbacks] == [[account(2)]]
    assert bank.reads == 1  # a slot on its way is no reason to read the table again
