"""No one in who should not be: every unauthenticated, wrong-role and wrong-secret path is
refused, and Redis, ZooKeeper and PostgreSQL give nothing to a client without credentials.
Limits: per-client request rate, and the size of a request, at the gateway."""

from __future__ import annotations

import json
import re
import secrets as token_source
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pytest
import redis
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from bank.v1 import account_pb2, account_pb2_grpc, admin_pb2, admin_pb2_grpc, shard_pb2, shard_pb2_grpc
from bankclient import BankClient
from services.cluster.credentials import read_identities, write_identities
from services.cluster.netns import in_dc
from services.cluster.topology import ClusterSpec
from services.common.identifiers import make_account_number
from services.rpc.auth import CLIENT, identity_entry
from tests.integration.cluster_helpers import Cluster, secrets

NOBODY = make_account_number(1, 99_999_999_999)  # well formed, never opened
GET = account_pb2.GetAccountRequest(account_number=NOBODY)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def endpoint(cluster: Cluster, kind: str) -> str:
    component = cluster.components(kind)[0]
    return f"{component['host']}:{component['port']}"


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_gateway_refuses_callers_without_a_valid_token(bank_cluster: Cluster) -> None:
    keys = secrets(bank_cluster.home)
    with grpc.insecure_channel(endpoint(bank_cluster, "gateway")) as channel:
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        topology = admin_pb2.GetTopologyRequest()
        delay = admin_pb2.SetLinkDelayRequest(dc="dc1", other_dc="dc2", delay_ms=0)
        refused = {
            "no token": code_of(lambda: accounts.GetAccount(GET, timeout=5)),
            "not bearer": code_of(
                lambda: accounts.GetAccount(
                    GET, timeout=5, metadata=(("authorization", keys["client_token"]),)
                )
            ),
            "wrong token": code_of(lambda: accounts.GetAccount(GET, timeout=5, metadata=bearer("x" * 43))),
            "peer token is not a client's": code_of(
                lambda: accounts.GetAccount(GET, timeout=5, metadata=bearer(keys["peer_token"]))
            ),
            "admin without token": code_of(lambda: admin.GetTopology(topology, timeout=5)),
            "admin with a client token": code_of(
                lambda: admin.SetLinkDelay(delay, timeout=5, metadata=bearer(keys["client_token"]))
            ),
        }
        answered = {
            "client": code_of(
                lambda: accounts.GetAccount(GET, timeout=5, metadata=bearer(keys["client_token"]))
            ),
            "admin": code_of(
                lambda: admin.GetTopology(topology, timeout=5, metadata=bearer(keys["admin_token"]))
            ),
            # A client that routes itself reads the routing table (and nothing else of AdminService).
            "client's topology": code_of(
                lambda: admin.GetTopology(topology, timeout=5, metadata=bearer(keys["client_token"]))
            ),
        }
    unauthenticated, denied = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    assert refused == {
        "no token": unauthenticated,
        "not bearer": unauthenticated,
        "wrong token": unauthenticated,
        "peer token is not a client's": denied,
        "admin without token": unauthenticated,
        "admin with a client token": denied,
    }
    # The client's request reached the ledger (no such account); the admin's was answered.
    ok = grpc.StatusCode.OK
    assert answered == {"client": grpc.StatusCode.NOT_FOUND, "admin": ok, "client's topology": ok}


def test_bank_nodes_serve_the_public_services_to_callers_and_shard_service_to_peers(
    bank_cluster: Cluster,
) -> None:
    """Clients that route themselves call a node's AccountService as a gateway's; the credits
    shards send each other (ShardService) stay for peers."""
    keys = secrets(bank_cluster.home)
    credit = shard_pb2.ApplyCreditRequest(
        transfer_id="T0001-" + "0" * 32, request_id="credit:x", from_account=NOBODY,
        to_account=NOBODY, amount=1, currency="CNY",
    )  # fmt: skip
    with grpc.insecure_channel(endpoint(bank_cluster, "node")) as channel:
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        shard = shard_pb2_grpc.ShardServiceStub(channel)
        codes = {
            "no token": code_of(lambda: accounts.GetAccount(GET, timeout=5)),
            "wrong secret": code_of(
                lambda: accounts.GetAccount(GET, timeout=5, metadata=bearer("not-the-secret"))
            ),
            "credit without token": code_of(lambda: shard.ApplyCredit(credit, timeout=5)),
            "credit with a client token": code_of(
                lambda: shard.ApplyCredit(credit, timeout=5, metadata=bearer(keys["client_token"]))
            ),
        }
        answered = {
            role: code_of(
                lambda token=keys[f"{role}_token"]: accounts.GetAccount(
                    GET, timeout=5, metadata=bearer(token)
                )
            )
            for role in ("client", "admin", "peer")
        }
    unauthenticated, denied = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    assert codes == {
        "no token": unauthenticated,
        "wrong secret": unauthenticated,
        "credit without token": unauthenticated,
        "credit with a client token": denied,
    }
    # Each gets an answer from the ledger: the account is not there, or not this node's shard.
    assert set(answered.values()) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}, answered


def test_health_and_reflection_stay_open(bank_cluster: Cluster) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for kind in ("gateway", "node"):
        with grpc.insecure_channel(endpoint(bank_cluster, kind)) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_chaos_needs_the_admin_credential(bank_cluster: Cluster) -> None:
    with (
        BankClient.from_home(bank_cluster.home, role="client") as client,
        pytest.raises(grpc.RpcError) as refused,
    ):
        client.set_link_delay("dc1", "dc2", 100)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with BankClient.from_home(bank_cluster.home, role="admin") as admin:
        leaders = admin.get_topology().leaders
        assert sorted(leader.shard for leader in leaders) == [0, 1, 2]
        with pytest.raises(grpc.RpcError) as bad:
            admin.set_link_delay("dc1", "dc1", 100)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "other_dc" in (
            bad.value.details() or ""
        )


def test_redis_zookeeper_and_postgres_give_nothing_without_credentials(bank_cluster: Cluster) -> None:
    keys = secrets(bank_cluster.home)
    for kind in ("redis", "sentinel"):
        component = bank_cluster.components(kind)[0]
        anonymous = redis.Redis(host=component["host"], port=component["port"], socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        wrong = redis.Redis(
            host=component["host"], port=component["port"], password="guess", socket_timeout=2
        )
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        right = redis.Redis(
            host=component["host"], port=component["port"], password=keys["redis_password"], socket_timeout=2
        )
        assert right.ping()
        right.close()

    zookeeper = bank_cluster.components("zookeeper")[0]
    hosts = f"{zookeeper['host']}:{zookeeper['port']}"
    anonymous_zk = KazooClient(hosts=hosts)
    anonymous_zk.start(timeout=10)
    try:
        for read in (
            lambda: anonymous_zk.get("/bank/slots"),
            lambda: anonymous_zk.get_children("/bank/shards"),
        ):
            with pytest.raises(NoAuthError):
                read()
        with pytest.raises(NoAuthError):
            anonymous_zk.set("/bank/shards/0", b"{}")
    finally:
        anonymous_zk.stop()
        anonymous_zk.close()
    user, password = keys["zk_auth"].split(":", 1)
    authenticated = KazooClient(hosts=hosts, auth_data=[("digest", f"{user}:{password}")])
    authenticated.start(timeout=10)
    try:
        assert b"ranges" in authenticated.get("/bank/slots")[0]
    finally:
        authenticated.stop()
        authenticated.close()

    primary = bank_cluster.primary(0)
    for password_tried in ("", "guess"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host=primary["host"], port=primary["port"], user="bank", password=password_tried,
                dbname="bank",
                connect_timeout=3,
            ).close()  # fmt: skip
    for user_tried in ("postgres", "replicator"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host=primary["host"], port=primary["port"], user=user_tried, password="guess", dbname="bank",
                connect_timeout=3,
            ).close()  # fmt: skip


def test_services_listen_only_on_their_dc_address(bank_cluster: Cluster) -> None:
    """Every listening socket of every process the cluster started is on its DC's address."""
    components = [c for c in bank_cluster.status()["components"] if c.get("pid")]
    pids = {c["pid"]: c for c in components}
    spec = ClusterSpec.from_json(json.loads((bank_cluster.home / "cluster.json").read_text())["spec"])
    seen: dict[str, set[str]] = {}
    for dc in sorted({c["dc"] for c in components}):
        own = next(c["host"] for c in components if c["dc"] == dc)
        listing = subprocess.run(
            in_dc(spec, dc, ["ss", "-Hltnp"]), capture_output=True, text=True, check=True
        )
        for line in listing.stdout.splitlines():
            local = line.split()[3].rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
            owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
            for pid in owners:
                component = pids.get(pid)  # a postmaster's PID is read from its pid file
                if component is not None and component["dc"] == dc:
                    seen.setdefault(component["name"], set()).add(local)
                    assert local == own, f"{component['name']} listens on {local}, beyond {dc}'s {own}"
    kinds = {c["kind"] for c in components if c["name"] in seen}
    assert kinds == {"zookeeper", "redis", "sentinel", "postgres", "node", "gateway"}, seen


def test_per_client_rate_limit_and_credentials_change_without_restart(bank_cluster: Cluster) -> None:
    """A new client credential limited to 5 requests/s: added, throttled, then revoked."""
    home = bank_cluster.home
    original = read_identities(home)
    token = token_source.token_urlsafe(32)
    write_identities(home, [*original, identity_entry("trial", CLIENT, token, rate_per_s=5)])
    gateway = endpoint(bank_cluster, "gateway")
    try:
        with grpc.insecure_channel(gateway) as channel:
            accounts = account_pb2_grpc.AccountServiceStub(channel)

            def ask() -> tuple[grpc.StatusCode, str]:
                try:
                    accounts.GetAccount(GET, timeout=5, metadata=bearer(token))
                except grpc.RpcError as err:
                    return err.code(), err.details() or ""
                return grpc.StatusCode.OK, ""

            deadline = time.monotonic() + 10
            while ask()[0] == grpc.StatusCode.UNAUTHENTICATED:  # the gateway reads the file within ~1 s
                assert time.monotonic() < deadline, "the new credential was never accepted"
                time.sleep(0.1)
            started = time.monotonic()
            answers = [ask() for _ in range(60)]
            elapsed = time.monotonic() - started
        codes = Counter(code for code, _ in answers)
        # A bucket of 5 (refilled at 5/s) lets through at most 5 + 5 x elapsed + 1 of 60 quick calls;
        # the others are refused with a message that names the limit and the credential.
        assert set(codes) == {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert codes[grpc.StatusCode.NOT_FOUND] <= 5 + 5 * elapsed + 1, (codes, elapsed)
        limited = next(d for c, d in answers if c == grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "5 requests/s" in limited and "'trial'" in limited
        # The cluster's own client credential is not slowed by another client's limit.
        with BankClient.from_home(home) as client, pytest.raises(grpc.RpcError) as other:
            client.get_account(GET.account_number)
        assert other.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        write_identities(home, original)
    with grpc.insecure_channel(gateway) as channel:
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        deadline = time.monotonic() + 10
        revoked = grpc.StatusCode.UNAUTHENTICATED
        while code_of(lambda: accounts.GetAccount(GET, timeout=5, metadata=bearer(token))) != revoked:
            assert time.monotonic() < deadline, "the revoked credential is still accepted"
            time.sleep(0.1)


def test_oversized_request_is_refused_at_the_gateway(bank_cluster: Cluster) -> None:
    keys = secrets(bank_cluster.home)
    huge = account_pb2.OpenAccountRequest(request_id="r" * 36, customer_id="c" * (2 << 20), currency="CNY")
    with grpc.insecure_channel(endpoint(bank_cluster, "gateway")) as channel:
        code = code_of(
            lambda: account_pb2_grpc.AccountServiceStub(channel).OpenAccount(
                huge, timeout=10, metadata=bearer(keys["client_token"])
            )
        )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
