"""A fresh cluster of its own for a benchmark script (bench/*.py): up in a temporary home, its
accounts loaded, and gone afterwards with the home (credentials, logs): a script keeps only what
it printed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.cli.bench import accounts_by_shard
from services.cluster import launcher
from services.cluster.bulk_load import bulk_load
from services.cluster.netns import choose_net
from services.cluster.state import ClusterState
from services.cluster.topology import ClusterSpec

OPENING_BALANCE = 10_000_000  # minor units a loaded account starts with
CURRENCY = "CNY"


@contextmanager
def fresh_cluster(name: str, octet: int, accounts: int) -> Iterator[tuple[ClusterState, list[str]]]:
    """The cluster `name` (its addresses 10.213.<octet>.x in namespaces, or loopback) with
    `accounts` accounts loaded; yields it and shard 0's account numbers."""
    home = Path(tempfile.mkdtemp(prefix=f"bank-{name}-"))
    state = launcher.up(home, ClusterSpec(net=choose_net("auto"), name=name, octet=octet), lambda m: None)
    try:
        loaded = bulk_load(state, accounts, OPENING_BALANCE, CURRENCY, lambda m: None)
        yield state, accounts_by_shard(state, loaded)[0]
    finally:
        launcher.down(home, lambda m: None)
        shutil.rmtree(home)
