"""Bearer tokens, roles and the per-caller rate limit, without any service."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple
from unittest.mock import MagicMock

import pytest

from services.rpc.auth import (
    ADMIN,
    CLIENT,
    PEER,
    AuthInterceptor,
    RateLimiter,
    TokenStore,
    bearer,
    identity_entry,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_rate_and_refills_with_time() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.allow("a", 5) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("b", 5)  # callers have their own buckets
    clock.now += 0.2  # one request's worth
    assert limiter.allow("a", 5) and not limiter.allow("a", 5)
    clock.now += 60  # a long pause refills only up to one second's worth
    assert sum(limiter.allow("a", 5) for _ in range(10)) == 5
    assert all(limiter.allow("c", 0) for _ in range(1000))  # 0: no limit


def test_tokens_are_known_by_digest_with_their_role() -> None:
    store = TokenStore(
        [identity_entry("client", CLIENT, "t-client", 10), identity_entry("admin", ADMIN, "t-admin")]
    )
    client = store.lookup("t-client")
    assert client is not None and (client.name, client.role, client.rate_per_s) == ("client", CLIENT, 10)
    admin = store.lookup("t-admin")
    assert admin is not None and admin.role == ADMIN
    assert store.lookup("t-client ") is None and store.lookup("") is None and store.lookup("t-adm") is None


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        identity_entry("x", "root", "t")


def test_the_token_file_is_read_again_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"identities": [identity_entry("peer", PEER, "old")]}))
    store = TokenStore(path=path)
    assert store.lookup("old") is not None and store.lookup("new") is None
    path.write_text(json.dumps({"identities": [identity_entry("peer", PEER, "new")]}))
    os.utime(path, ns=(1, 1))  # a different mtime whatever the clock's resolution
    monkeypatch.setattr("services.rpc.auth.RELOAD_CHECK_S", 0.0)
    assert store.lookup("new") is not None and store.lookup("old") is None
    path.write_text("{not json")  # a broken file keeps the identities in force
    os.utime(path, ns=(2, 2))
    assert store.lookup("new") is not None


class _Call(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def _outcome(interceptor: AuthInterceptor, method: str, token: str) -> str:
    """'served', or the code the interceptor's refusal aborts with."""
    handler = interceptor.intercept_service(lambda details: "served", _Call(method, bearer(token)))
    if handler == "served":
        return "served"
    context = MagicMock()
    context.abort.side_effect = RuntimeError
    with pytest.raises(RuntimeError):
        handler.unary_unary(None, context)
    return str(context.abort.call_args.args[0].name)


def test_a_method_may_allow_roles_its_service_does_not() -> None:
    tokens = TokenStore(
        [identity_entry("c", CLIENT, "client-token"), identity_entry("a", ADMIN, "admin-token")]
    )
    roles = {"bank.v1.AdminService": {ADMIN}, "bank.v1.AdminService/GetTopology": {CLIENT, ADMIN}}
    interceptor = AuthInterceptor(tokens, roles)
    outcomes = {
        (method, token): _outcome(interceptor, f"/bank.v1.AdminService/{method}", token)
        for method in ("GetTopology", "SetLinkDelay")
        for token in ("client-token", "admin-token")
    }
    assert outcomes == {
        ("GetTopology", "client-token"): "served",
        ("GetTopology", "admin-token"): "served",
        ("SetLinkDelay", "client-token"): "PERMISSION_DENIED",
        ("SetLinkDelay", "admin-token"): "served",
    }
