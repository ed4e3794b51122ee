"""Runs a mutating request at most once per request id, answering retries with the first result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps quotes strings with
from typing import Any, Generic, TypeVar

from services.common.errors import RequestIdReused
from services.common.model import record_from_json, record_to_json
from services.storage.ledger_store import LedgerStore
from services.storage.ledger_tx import LedgerTx, PriorRequest

R = TypeVar("R")


def fingerprint(operation: str, payload: dict[str, Any]) -> str:
    """A digest of what a request asks for, after validation (so 12.34 and 1234 fen agree)."""
    canonical = _canonical({"operation": operation, **payload})
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _canonical(flat: dict[str, Any]) -> str:
    """`json.dumps(flat, sort_keys=True)`, the same text (digests already stored must still
    match), built directly for the flat payloads requests have: json.dumps was 8% of a node's
    Python on batches. Anything else goes to json.dumps itself."""
    parts = []
    for key in sorted(flat):
        value = flat[key]
        kind = type(value)
        if kind is str:
            text = _quote(value)
        elif kind is int:
            text = int.__repr__(value)
        elif value is None:
            text = "null"
        elif kind is bool:
            text = "true" if value else "false"
        else:
            return json.dumps(flat, sort_keys=True)
        if type(key) is not str:
            return json.dumps(flat, sort_keys=True)
        parts.append(f"{_quote(key)}: {text}")
    return "{" + ", ".join(parts) + "}"


def run_once(
    store: LedgerStore,
    operation: str,
    request_id: str,
    payload: dict[str, Any],
    work: Callable[[LedgerTx], R],
    accounts: tuple[str, ...] = (),
) -> R:
    """Does `work` unless `request_id` was already acknowledged, in one transaction (shared with
    concurrent requests when the store commits in groups; the outcome is this request's own)."""
    return store.run_grouped(once(operation, request_id, payload, work, accounts))


class OnceWork(Generic[R]):
    """A unit of work and the accounts it will lock (a batch locks them all first, in order).

    A group commit may book it together with others of its kind: then `set_runner` is the
    function that books such units' `set_item`s at once (see `services.storage.group_commit`)."""

    def __init__(self, attempt: Callable[[LedgerTx], R], accounts: tuple[str, ...]) -> None:
        self.attempt = attempt
        self.accounts = accounts
        self.set_runner: Callable[[LedgerTx, list[Any]], list[Any]] | None = None
        self.set_item: Any = None

    def __call__(self, tx: LedgerTx) -> R:
        return self.attempt(tx)


def replay(prior: PriorRequest, request_id: str, operation: str, digest: str) -> Any:
    """The first result of a request id already acknowledged, if this is the same request."""
    if prior.operation != operation or prior.fingerprint != digest:
        raise RequestIdReused(
            f"request_id {request_id} was already used for another request"
            f" ({prior.operation}); choose a new id for a new request"
        )
    return record_from_json(prior.result)


def once(
    operation: str,
    request_id: str,
    payload: dict[str, Any],
    work: Callable[[LedgerTx], R],
    accounts: tuple[str, ...] = (),
) -> OnceWork[R]:
    """`work` as a unit of work that runs at most once per request id, inside any transaction.

    The same id with the same payload returns the stored first result; with another payload
    (or for another operation) it is refused. A request that fails stores nothing, so it may be
    retried under the same id.
    """
    digest = fingerprint(operation, payload)

    def attempt(tx: LedgerTx) -> R:
        prior = tx.claim_request(request_id, operation, digest)
        if prior is not None:
            result: R = replay(prior, request_id, operation, digest)
            return result
        record = work(tx)
        tx.save_request_result(request_id, record_to_json(record))
        return record

    return OnceWork(attempt, accounts)
