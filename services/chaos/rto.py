"""Recovery time: from a fault to the first write that succeeds on each affected shard.

Each shard has a probe account; after a fault, one thread per shard deposits one fen into it,
again and again with short deadlines, through any gateway, until a deposit is acknowledged.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from bankclient import BankClient, GatewayUnavailable
from services.cluster.state import ClusterState
from services.common.identifiers import slot_of_customer

PROBE_DEADLINE_S = 8.0  # the gateway holds and re-routes the write; the client moves on only if it is down


def gateways(state: ClusterState) -> list[str]:
    return [f"{c.host}:{c.port}" for c in state.components if c.kind == "gateway"]


def ensure_probes(state: ClusterState) -> dict[int, str]:
    """One probe account per shard (opened once, remembered in the cluster's record)."""
    missing = [s for s in range(state.spec.shards) if str(s) not in state.probes]
    if missing:
        ranges = state.spec.slot_ranges()
        with BankClient.from_home(state.home, deadline_s=10) as client:
            for shard in missing:
                first, last, _ = ranges[shard]
                customer = next(
                    f"probe-{shard}-{i}"
                    for i in range(100_000)
                    if first <= slot_of_customer(f"probe-{shard}-{i}") <= last
                )
                state.probes[str(shard)] = client.open_account(customer, "CNY").account_number
        state.save()
    return {int(s): a for s, a in state.probes.items()}


def measure(
    state: ClusterState, shards: list[int], since: float, timeout_s: float = 60.0
) -> dict[int, float | None]:
    """Seconds from `since` (a time.time()) to the first acknowledged write on each shard."""
    probes = ensure_probes(state) if shards else {}

    def probe(shard: int) -> float | None:
        deadline = time.monotonic() + timeout_s
        with BankClient.from_home(state.home, deadline_s=PROBE_DEADLINE_S) as client:
            while time.monotonic() < deadline:
                try:
                    client.deposit(probes[shard], 1, "CNY")
                    return round(time.time() - since, 3)
                except (grpc.RpcError, GatewayUnavailable):
                    time.sleep(0.02)
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(shards))) as pool:
        return dict(zip(shards, pool.map(probe, shards), strict=True))
