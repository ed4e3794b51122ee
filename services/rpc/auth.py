"""Who may call what: bearer tokens with a role, checked by a server interceptor before any
servicer runs, and a per-caller rate limit.

Roles: `client` (the public AccountService and LedgerService, at a gateway or, routed by the
client itself, at a bank-node; and a gateway's routing table, AdminService/GetTopology), `admin`
(those and all of AdminService) and `peer` (gateways and bank-nodes calling a bank-node, the
only callers of its ShardService). Health checking and
reflection stay open: the contract is public, the data behind it is not. Tokens are stored as
SHA-256 digests; the file of digests is read again when it changes, so a credential can be added
or revoked without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

CLIENT, ADMIN, PEER = "client", "admin", "peer"
ROLES = (CLIENT, ADMIN, PEER)
AUTH_HEADER = "authorization"
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
RELOAD_CHECK_S = 1.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that presents `token`."""
    return ((AUTH_HEADER, f"Bearer {token}"),)


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    rate_per_s: float = 0.0  # 0: no limit


def identity_entry(name: str, role: str, token: str, rate_per_s: float = 0.0) -> dict[str, Any]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return {"name": name, "role": role, "sha256": digest(token), "rate_per_s": rate_per_s}


class TokenStore:
    """Digest -> identity, from entries or from a JSON file ({"identities": [entry, ...]})."""

    def __init__(self, entries: Iterable[dict[str, Any]] = (), path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._by_digest = self._index(entries)
        self._mtime_ns = -1
        self._checked = 0.0
        if path is not None:
            self._reload()

    @staticmethod
    def _index(entries: Iterable[dict[str, Any]]) -> dict[str, Identity]:
        return {
            str(e["sha256"]): Identity(str(e["name"]), str(e["role"]), float(e.get("rate_per_s", 0)))
            for e in entries
        }

    def _reload(self) -> None:
        assert self.path is not None
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime_ns:
                return
            entries = json.loads(self.path.read_text(encoding="utf-8"))["identities"]
        except (OSError, ValueError, KeyError) as err:
            log.warning("event=token_store_unreadable path=%s error=%r", self.path, err)
            return  # the identities known so far stay in force
        with self._lock:
            self._by_digest, self._mtime_ns = self._index(entries), mtime
        log.info("event=token_store_loaded identities=%s", len(entries))

    def lookup(self, token: str) -> Identity | None:
        if self.path is not None and time.monotonic() - self._checked > RELOAD_CHECK_S:
            self._checked = time.monotonic()
            self._reload()
        wanted = digest(token)
        with self._lock:
            for known, identity in self._by_digest.items():
                if hmac.compare_digest(known, wanted):
                    return identity
        return None


class RateLimiter:
    """A token bucket per caller: `rate_per_s` requests a second, bursts of one second's worth."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill)
        self._lock = threading.Lock()

    def allow(self, name: str, rate_per_s: float) -> bool:
        if rate_per_s <= 0:
            return True
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(name, (rate_per_s, now))
            tokens = min(rate_per_s, tokens + (now - last) * rate_per_s)
            allowed = tokens >= 1.0
            self._buckets[name] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class AuthInterceptor(grpc.ServerInterceptor):
    """`roles_by_service`: the roles allowed on each service, or on one method of it when keyed
    "package.Service/Method" (which then wins over its service's); a service not named is refused."""

    def __init__(
        self, tokens: TokenStore, roles_by_service: dict[str, set[str]], limiter: RateLimiter | None = None
    ) -> None:
        self.tokens = tokens
        self.roles_by_service = roles_by_service
        self.limiter = limiter

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        service = method.split("/")[1] if method.count("/") == 2 else ""
        if service in OPEN_SERVICES:
            return continuation(handler_call_details)
        header = dict(handler_call_details.invocation_metadata or ()).get(AUTH_HEADER, "")
        if not isinstance(header, str) or not header.startswith("Bearer ") or len(header) > 512:
            return _refusal(
                grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required (authorization metadata)"
            )
        identity = self.tokens.lookup(header[len("Bearer ") :])
        if identity is None:
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, "the token is not valid")
        allowed = self.roles_by_service.get(method.lstrip("/")) or self.roles_by_service.get(service, set())
        if identity.role not in allowed:
            return _refusal(
                grpc.StatusCode.PERMISSION_DENIED, f"role {identity.role!r} may not call {service or method}"
            )
        if self.limiter is not None and not self.limiter.allow(identity.name, identity.rate_per_s):
            return _refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {identity.rate_per_s:g} requests/s for {identity.name!r} exceeded; slow down",
            )
        return continuation(handler_call_details)
