"""Hypothesis strategies of hostile requests to the public contract (boundary and random values,
malformed ids, unknown currencies, oversized strings, unknown enum-free fields)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from bank.v1 import account_pb2 as A
from bank.v1 import ledger_pb2 as L

INT64 = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 10**15, 10**15 + 1, 2**62, 2**63 - 1, -(2**63)]),
)
CURRENCY = st.one_of(
    st.sampled_from(["CNY", "USD", "JPY", "BHD", "", "cny", "XYZ", "CN"]), st.text(max_size=6)
)
REQUEST_ID = st.one_of(st.uuids().map(str), st.text(max_size=24), st.just(""), st.just("r" * 5000))
DECIMAL = st.one_of(st.decimals(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=16))


def requests(accounts: list[str]) -> st.SearchStrategy[tuple[str, str, Any]]:
    number = st.one_of(
        st.sampled_from([*accounts, "", "0" * 16, "9" * 16]),
        st.text(alphabet="0123456789", min_size=14, max_size=18),
        st.text(max_size=40),
    )

    @st.composite
    def one(draw: Any) -> tuple[str, str, Any]:
        kind = draw(st.sampled_from(["deposit", "withdraw", "transfer", "get", "open", "list", "hold", "capture",
                                     "transfer_get", "freeze"]))  # fmt: skip
        if kind == "deposit":
            request = L.DepositRequest(
                request_id=draw(REQUEST_ID), account_number=draw(number), currency=draw(CURRENCY)
            )
            if draw(st.booleans()):
                request.amount = draw(INT64)
            else:
                request.amount_decimal = draw(DECIMAL)
            return "ledger", "Deposit", request
        if kind == "withdraw":
            return (
                "ledger",
                "Withdraw",
                L.WithdrawRequest(
                    request_id=draw(REQUEST_ID),
                    account_number=draw(number),
                    amount=draw(INT64),
                    currency=draw(CURRENCY),
                ),
            )
        if kind == "transfer":
            return "ledger", "Transfer", L.TransferRequest(
                request_id=draw(REQUEST_ID), from_account=draw(number), to_account=draw(number),
                amount=draw(INT64), currency=draw(CURRENCY), reference=draw(st.text(max_size=300)),
            )  # fmt: skip
        if kind == "get":
            return "accounts", "GetAccount", A.GetAccountRequest(account_number=draw(number))
        if kind == "open":
            return "accounts", "OpenAccount", A.OpenAccountRequest(
                request_id=draw(REQUEST_ID), customer_id=draw(st.text(max_size=80)), currency=draw(CURRENCY),
                overdraft_limit=draw(INT64),
            )  # fmt: skip
        if kind == "list":
            return "ledger", "ListPostings", L.ListPostingsRequest(
                account_number=draw(number), page_token=draw(st.text(max_size=70)),
                page_size=draw(st.integers(-(2**31), 2**31 - 1)),
            )  # fmt: skip
        if kind == "hold":
            return "ledger", "CreateHold", L.CreateHoldRequest(
                request_id=draw(REQUEST_ID), account_number=draw(number), to_account=draw(number),
                amount=draw(INT64), currency=draw(CURRENCY), timeout_seconds=draw(st.integers(0, 2**32 - 1)),
            )  # fmt: skip
        if kind == "capture":
            return (
                "ledger",
                "CaptureHold",
                L.CaptureHoldRequest(
                    request_id=draw(REQUEST_ID), hold_id=draw(st.text(max_size=40)), amount=draw(INT64)
                ),
            )
        if kind == "transfer_get":
            return "ledger", "GetTransfer", L.GetTransferRequest(transfer_id=draw(st.text(max_size=40)))
        return (
            "accounts",
            "FreezeAccount",
            A.FreezeAccountRequest(
                request_id=draw(REQUEST_ID), account_number=draw(number), reason=draw(st.text(max_size=300))
            ),
        )

    return one()
