"""`bankctl account|deposit|withdraw|transfer|statement|transfer-status`: the bank's own
operations against a running cluster, through the client library with the client credential.

Amounts are decimals of the currency's major unit ("12.34" CNY); the bank itself parses them
(`amount_decimal`), so the command line accepts exactly what the API accepts. A human table by
default, `--json` for tools; a refusal prints its code, reason and message and exits 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from bank.v1 import account_pb2, ledger_pb2
from bankclient import BankClient
from bankclient.client import REASON_KEY, new_request_id
from services.common.money import format_minor

COMMANDS = ("account", "deposit", "withdraw", "transfer", "statement", "transfer-status")


def add_parsers(commands: Any) -> None:
    """The bank's operations as subcommands of `bankctl`."""
    account = commands.add_parser("account", help="open, show, freeze, unfreeze or close an account")
    actions = account.add_subparsers(dest="action", required=True)
    opened = _leaf(actions.add_parser("open", help="open an account for a customer"), mutating=True)
    opened.add_argument("customer_id")
    opened.add_argument("--currency", default="CNY", help="ISO-4217 code (default CNY)")
    for name, text in (
        ("show", "balance, available, status"), ("freeze", "refuse its movements"),
        ("unfreeze", "allow its movements again"), ("close", "close an empty account"),
    ):  # fmt: skip
        one = _leaf(actions.add_parser(name, help=text), mutating=name != "show")
        one.add_argument("account_number")
        if name == "freeze":
            one.add_argument("--reason", default="", help="why (kept with the account)")
    for name, text in (("deposit", "money into an account"), ("withdraw", "money out of an account")):
        one = _leaf(commands.add_parser(name, help=text), mutating=True)
        one.add_argument("account_number")
        one.add_argument("amount", help='a decimal of the currency ("12.34")')
        one.add_argument("--currency", default="CNY")
    transfer = _leaf(commands.add_parser("transfer", help="move money between two accounts"), mutating=True)
    transfer.add_argument("from_account")
    transfer.add_argument("to_account")
    transfer.add_argument("amount", help='a decimal of the currency ("12.34")')
    transfer.add_argument("--currency", default="CNY")
    statement = _leaf(commands.add_parser("statement", help="an account's postings, oldest first, paged"))
    statement.add_argument("account_number")
    statement.add_argument("--page-size", type=int, default=50, help="lines per page (default 50)")
    statement.add_argument("--page-token", default="", help="the page to show (printed under the last)")
    status = _leaf(commands.add_parser("transfer-status", help="a transfer's status and outcome"))
    status.add_argument("transfer_id")


def _leaf(parser: argparse.ArgumentParser, mutating: bool = False) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON for tools")
    if mutating:
        parser.add_argument("--request-id", default="", help="idempotency key (default: a new one)")
    return parser


def run(args: argparse.Namespace) -> int:
    with BankClient.from_home(args.home, role="client") as client:
        try:
            answer, render = _call(client, args)
        except grpc.RpcError as err:
            return _refused(err, args.json)
    if args.json:
        print(json.dumps(MessageToDict(answer, preserving_proto_field_name=True), indent=2))
    else:
        print(render(answer))
    return 0


def _call(client: BankClient, args: argparse.Namespace) -> tuple[Any, Callable[[Any], str]]:
    request_id = getattr(args, "request_id", "") or new_request_id()
    request: Any
    if args.command == "account":
        return _account(client, args, request_id)
    if args.command in ("deposit", "withdraw"):
        kind = ledger_pb2.DepositRequest if args.command == "deposit" else ledger_pb2.WithdrawRequest
        request = kind(request_id=request_id, account_number=args.account_number,
                       amount_decimal=args.amount, currency=args.currency)  # fmt: skip
        return client.call("ledger", args.command.capitalize(), request), _movement
    if args.command == "transfer":
        request = ledger_pb2.TransferRequest(
            request_id=request_id, from_account=args.from_account, to_account=args.to_account,
            amount_decimal=args.amount, currency=args.currency,
        )  # fmt: skip
        return client.call("ledger", "Transfer", request), lambda a: _transfer_table(a.transfer)
    if args.command == "statement":
        request = ledger_pb2.ListPostingsRequest(
            account_number=args.account_number, page_token=args.page_token, page_size=args.page_size
        )
        return client.call("ledger", "ListPostings", request), lambda a: _statement(a, args.account_number)
    if args.command == "transfer-status":
        request = ledger_pb2.GetTransferRequest(transfer_id=args.transfer_id)
        return client.call("ledger", "GetTransfer", request), lambda a: _transfer_table(a.transfer)
    raise AssertionError(args.command)


def _account(
    client: BankClient, args: argparse.Namespace, request_id: str
) -> tuple[Any, Callable[[Any], str]]:
    A, action = account_pb2, args.action
    request: Any
    if action == "open":
        request = A.OpenAccountRequest(
            request_id=request_id, customer_id=args.customer_id, currency=args.currency
        )
    elif action == "show":
        request = A.GetAccountRequest(account_number=args.account_number)
    elif action == "freeze":
        request = A.FreezeAccountRequest(
            request_id=request_id, account_number=args.account_number, reason=args.reason
        )
    else:
        kind = A.UnfreezeAccountRequest if action == "unfreeze" else A.CloseAccountRequest
        request = kind(request_id=request_id, account_number=args.account_number)
    method = {"open": "OpenAccount", "show": "GetAccount"}.get(action, f"{action.capitalize()}Account")
    return client.call("accounts", method, request), lambda a: _account_table(a.account)


def _rows(pairs: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def _enum(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def _account_table(a: Any) -> str:
    return _rows([
        ("account", a.account_number), ("customer", a.customer_id), ("currency", a.currency),
        ("status", _enum(a.status, account_pb2.AccountStatus, "ACCOUNT_STATUS_")),
        ("balance", format_minor(a.balance, a.currency)),
        ("available", format_minor(a.available_balance, a.currency)),
        ("held", format_minor(a.held, a.currency)), ("slot", str(a.slot)), ("version", str(a.version)),
    ])  # fmt: skip


def _transfer_table(t: Any) -> str:
    pairs = [
        ("transfer", t.transfer_id), ("kind", _enum(t.kind, ledger_pb2.TransferKind, "TRANSFER_KIND_")),
        ("status", _enum(t.status, ledger_pb2.TransferStatus, "TRANSFER_STATUS_")),
        ("from", t.from_account or "-"), ("to", t.to_account or "-"),
        ("amount", format_minor(t.amount, t.currency)), ("request", t.request_id),
    ]  # fmt: skip
    if t.failure_reason:
        pairs.append(("failure", t.failure_reason))
    return _rows(pairs)


def _movement(answer: Any) -> str:
    t = answer.transfer
    return (
        _transfer_table(t) + "\n" + _rows([("balance after", format_minor(answer.balance_after, t.currency))])
    )


def _statement(answer: Any, account: str) -> str:
    header = ("business date", "posted (UTC)", "kind", "amount", "balance after", "counterparty", "transfer")
    lines = [
        (p.business_date, p.posted_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
         _enum(p.kind, ledger_pb2.TransferKind, "TRANSFER_KIND_"),
         format_minor(p.amount, p.currency), format_minor(p.balance_after, p.currency),
         p.counterparty or "-", p.transfer_id)
        for p in answer.postings
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    right = {3, 4}
    text = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *lines]
    ]
    text.append(
        f"({len(lines)} postings of {account}, oldest first)" if lines else f"no postings on {account}"
    )
    if answer.next_page_token:
        text.append(f"next page: bankctl statement {account} --page-token {answer.next_page_token}")
    return "\n".join(line.rstrip() for line in text)


def _refused(err: grpc.RpcError, as_json: bool) -> int:
    reason = dict((m.key, m.value) for m in err.trailing_metadata() or ()).get(REASON_KEY, "")
    refusal = {"code": err.code().name, "reason": reason, "message": err.details() or ""}
    if as_json:
        print(json.dumps({"error": refusal}, indent=2))
    else:
        print(
            f"refused: {refusal['code']} ({refusal['reason'] or '-'}): {refusal['message']}", file=sys.stderr
        )
    return 1
