"""The compose launch, run for real: `bankctl up --engine compose` on Docker's engine (started
by `up` when none runs, the image built from Debian packages and PyPI), its health as ZooKeeper,
Redis, Sentinel and PostgreSQL report it, the data-center drill through the published gateways
(a kill and an isolation, each scored on all four points), and `down` leaving nothing behind.
One cluster serves the whole tier: the image build and the start are paid once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from services.cluster.compose import daemon, docker
from tests.compose.conftest import iptables_rules
from tests.integration.cluster_helpers import Cluster, bankctl
from tests.integration.conftest import report

NAME, OCTET = "bkz", 93
PROJECT = f"{NAME}{OCTET}"
SCORES = {"auto_switch", "auto_recovery", "zero_loss", "zero_interruption"}


@pytest.fixture(scope="module")
def compose_cluster(
    host_before: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("compose")
    started = time.monotonic()
    up = bankctl(home, "up", "--engine", "compose", "--name", NAME, "--octet", str(OCTET), timeout_s=1200)
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-3000:]
        record = json.loads((home / "cluster.json").read_text())["compose"]
        report(pytestconfig, f"\n[compose] bankctl up --engine compose: {time.monotonic() - started:.1f} s"
                             f" (image build {record['image_build_s']} s)")  # fmt: skip
        yield Cluster(home)
    finally:  # the last test brings it down and checks; this is for a run that failed before
        if (home / "cluster.json").exists():
            bankctl(home, "chaos", "heal", timeout_s=300)
            bankctl(home, "down", timeout_s=300)


def test_every_part_is_healthy_as_it_reports_itself(compose_cluster: Cluster) -> None:
    status = compose_cluster.status()
    assert status["net"] == "compose"
    components = status["components"]
    assert all(c["healthy"] for c in components), [c for c in components if not c["healthy"]]
    roles = lambda kind: sorted(c["role"] for c in components if c["kind"] == kind)  # noqa: E731
    assert roles("zookeeper") == ["follower", "follower", "leader"]
    assert roles("redis") == ["primary", "replica", "replica"]
    assert roles("postgres") == ["primary"] * 3 + ["standby"] * 6
    assert all(c["container"] for c in components)
    for shard in status["shards"]:
        standbys = shard["standbys"]
        assert len(standbys) == 2 and all(s["state"] == "streaming" for s in standbys), shard
        assert all(s["sync_state"] in ("quorum", "sync") for s in standbys), shard
    # Only the gateways (and Prometheus) are published, and on 127.0.0.1 alone.
    gateways = [c for c in components if c["kind"] == "gateway"]
    assert sorted((c["host"], c["port"]) for c in gateways) == [("127.0.0.1", 7101 + i) for i in range(3)]
    for name in docker.containers(PROJECT):
        ports = docker.docker("port", name).stdout.split()
        assert all(p.startswith("127.0.0.1:") for p in ports if ":" in p), (name, ports)


@pytest.mark.parametrize("cut", ["kill", "isolate"])
def test_drill_scores_all_four(compose_cluster: Cluster, cut: str, pytestconfig: pytest.Config) -> None:
    """The DC leading shard 0 is cut under load through the published gateways (5 s deadlines):
    no client operation fails, nothing is lost or doubled, its members rejoin by themselves."""
    dc = compose_cluster.primary(0)["dc"]
    done = bankctl(compose_cluster.home, "drill", "--cut", cut, "--dc", dc, "--for", "10", "--json",
                   timeout_s=600)  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout)
    report(
        pytestconfig,
        f"[compose] drill {cut} {dc}: {json.dumps({k: v for k, v in result.items() if k != 'history'})}",
    )
    assert result["scores"] == dict.fromkeys(SCORES, True), (result, done.stderr[-3000:])
    assert result["failed_operations"] == 0 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["acked"] > 0 and result["rto_s"]["0"] is not None
    assert compose_cluster.primary(0)["dc"] != dc  # led elsewhere, with nobody typing
    status = compose_cluster.status()
    assert all(c["healthy"] for c in status["components"] if c["dc"] == dc), status["components"]


def test_down_leaves_nothing_it_started(compose_cluster: Cluster, host_before: dict[str, Any]) -> None:
    """The last test of the tier: no container, network or volume of the project is left; where
    `up` started Docker's daemon, no daemon either, and the host's iptables exactly as before."""
    down = bankctl(compose_cluster.home, "down", timeout_s=300)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert not (compose_cluster.home / "cluster.json").exists()
    if not host_before["daemon"]:
        assert not daemon.docker_answers()
        assert iptables_rules() == host_before["iptables"]
        return
    assert docker.containers(PROJECT) == []
    networks = docker.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    volumes = docker.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [name for name in networks + volumes if name.startswith(f"{PROJECT}_")]
