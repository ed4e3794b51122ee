"""Lose a data center, lose no money: faults under a bounded load of transfers with 5 s deadlines.

After each fault: every shard has a leader again, the bank reconciles, every acknowledged
transfer is booked exactly once (so no write an isolated or paused old primary took after its
successor was elected survived), and the measured recovery time is under 5 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
import pytest

from bank.v1 import account_pb2, account_pb2_grpc
from tests.chaos.helpers import (
    RTO_LIMIT_S,
    Load,
    chaos,
    leader_of,
    run_fault,
    shard_of,
    verify,
    wait_for_progress,
)
from tests.eventually import eventually
from tests.integration.cluster_helpers import Cluster, bankctl, peer_metadata
from tests.integration.conftest import report


def test_isolate_dc_then_heal(cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config) -> None:
    dc = leader_of(cluster, 1)
    entry = run_fault(cluster, accounts, pytestconfig, ["isolate-dc", dc], ["heal"])
    assert "1" in entry["shards"]  # type: ignore[operator]
    assert leader_of(cluster, 1) != dc  # its successor keeps the lead after the heal


def test_pause_leader_node_longer_than_its_session(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config
) -> None:
    dc = leader_of(cluster, 2)
    node = next(c for c in cluster.components("node") if c["dc"] == dc)
    run_fault(cluster, accounts, pytestconfig, ["pause-node", dc, "--seconds", "5"], [])
    assert leader_of(cluster, 2) != dc
    # The resumed old leader must refuse the shard it lost (it is fenced by epoch and route).
    victim = next(a for a in accounts if shard_of(a) == 2)
    with (
        grpc.insecure_channel(f"{node['host']}:{node['port']}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        account_pb2_grpc.AccountServiceStub(channel).GetAccount(
            account_pb2.GetAccountRequest(account_number=victim),
            timeout=5,
            metadata=peer_metadata(cluster.home),
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_switchover_under_load_loses_no_request(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config
) -> None:
    load = Load(cluster, accounts)
    load.run()
    wait_for_progress(load, 100)
    origin = leader_of(cluster, 0)
    target = next(dc for dc in ("dc1", "dc2", "dc3") if dc != origin)
    for to_dc in (target, origin):
        done = bankctl(cluster.home, "switchover", "0", "--to", to_dc, timeout_s=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert leader_of(cluster, 0) == to_dc
        wait_for_progress(load, 100)
    load.finish()
    report(
        pytestconfig,
        f"\n[chaos] switchover of shard 0 {origin} -> {target} -> {origin} under load: {len(load.acked)}"
        f" acknowledged, {len(load.failed)} failed",
    )
    assert load.failed == {}
    verify(cluster, load)


def test_dc_failover_scenario_report(cluster: Cluster, tmp_path: Path) -> None:
    """A short dc-failover run headless: the report's figures are there and honest, and the
    HTML report's images exist."""
    assert bankctl(cluster.home, "load-accounts", "--count", "3000").returncode == 0
    done = bankctl(
        cluster.home, "scenario", "dc-failover", "--duration", "30", "--users", "12", "--fault-at", "10",
        "--restart-at", "20", "--reports", str(tmp_path), timeout_s=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = list(tmp_path.iterdir())
    data = json.loads((run / "report.json").read_text())
    assert data["acked_lost"] == 0 and data["duplicates"] == 0 and data["invariant_ok"] is True
    assert data["acked_transfers"] > 100 and data["throughput_tps"] > 0
    assert data["requests"]["total"] > data["requests"]["failed"] >= 0
    assert 0.9 < data["availability"] <= 1.0
    assert {"p50", "p95", "p99"} <= set(data["latency_ms"])
    (failover,) = data["failovers"]
    assert (
        failover["fault"] == "kill-dc" and failover["rto_s"] is not None and failover["rto_s"] < RTO_LIMIT_S
    )
    cost = data["cost"]
    assert cost["per_account_year_cny"] > 0 and {"cpu_cny", "memory_cny", "disk_cny"} == set(
        cost["breakdown"]
    )
    assert cost["assumptions"]["profile_accounts"] > 0
    page = (run / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert set(images) == {"throughput.png", "latency.png", "leaders.png", "cost.png"}
    assert all((run / image).stat().st_size > 1000 for image in images)
    marks = [m["label"] for m in data["fault_marks"]]
    assert marks == [f"kill-dc {failover['dc']}", f"restart-dc {failover['dc']}"]  # the undo is marked too


def test_kill_node_then_heal_keeps_the_new_node_in_the_record(cluster: Cluster) -> None:
    """heal restarts the node; the record must name the new process, or `down` would leak it."""
    dc = leader_of(cluster, 1)
    chaos(cluster, "kill-node", dc)
    healed = bankctl(cluster.home, "chaos", "heal")
    assert healed.returncode == 0, healed.stderr[-2000:]
    node = next(c for c in cluster.components("node") if c["dc"] == dc)
    assert node["healthy"]
    running = [
        p.pid for p in psutil.process_iter(["cmdline"])
        if any(f"node-{dc}.json" in part and str(cluster.home) in part for part in p.info["cmdline"] or [])
    ]  # fmt: skip
    assert running == [node["pid"]]


def test_a_member_that_cannot_start_after_a_power_cut_is_rebuilt_by_its_node(cluster: Cluster) -> None:
    """A power cut can interrupt a pg_rewind and leave a data directory PostgreSQL refuses; the
    restart must still bring the DC back, and the DC's node re-clones the member."""
    from services.cluster.pg_group import member_instance
    from services.cluster.state import ClusterState

    dc = next(d for d in ("dc1", "dc2", "dc3") if d != leader_of(cluster, 0))
    assert bankctl(cluster.home, "chaos", "kill-dc", dc, timeout_s=180).returncode == 0
    state = ClusterState.load(cluster.home)
    assert state is not None
    broken = member_instance(state, 0, dc)
    (broken.data_dir / "global" / "pg_control").unlink()  # what no PostgreSQL can start from
    restarted = bankctl(cluster.home, "chaos", "restart-dc", dc, timeout_s=240)
    assert restarted.returncode == 0, restarted.stdout[-2000:] + restarted.stderr[-2000:]
    assert f"{broken.name} did not start" in restarted.stdout
    deadline = time.monotonic() + 90
    while True:
        shard = next(s for s in cluster.status()["shards"] if s["shard"] == 0)
        member = next(m for m in shard["standbys"] if m["dc"] == dc)
        if member["state"] == "streaming":
            break
        assert time.monotonic() < deadline, f"{broken.name} was not rebuilt: {shard}"
        time.sleep(1)
    assert (broken.data_dir / "global" / "pg_control").exists()
    books = cluster.check(wait_s=60)
    assert books["reconciled"] and books["pending_transfers"] == 0, books


@pytest.mark.parametrize(
    "breakage",
    [
        # Its WAL receiver stopped: re-pointing it is enough.
        ("ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"),
        # Promoted behind the bank's back: it must be rewound onto the leader's timeline.
        ("SELECT pg_promote()",),
    ],
    ids=["receiver-stopped", "promoted-aside"],
)
def test_a_standby_that_stops_streaming_is_put_back_by_its_node(
    cluster: Cluster, breakage: tuple[str, ...]
) -> None:
    """No route change or session event announces a standby that quietly stopped streaming; with
    `ANY 1`, losing the DC of the shard's other standby would then stop the shard's commits."""
    from services.cluster.pg_group import member_instance
    from services.cluster.state import ClusterState

    shard = 1
    leader = leader_of(cluster, shard)
    dc = next(d for d in cluster.status()["dcs"] if d != leader)
    state = ClusterState.load(cluster.home)
    assert state is not None
    node_log = cluster.home / "logs" / f"node-{dc}.log"
    noticed = f"event=standby_not_streaming shard={shard} "
    member = member_instance(state, shard, dc)

    def standby_state() -> str:
        status = next(s for s in cluster.status()["shards"] if s["shard"] == shard)
        assert status["primary_dc"] == leader, status  # nothing failed over meanwhile
        return str(next(m["state"] for m in status["standbys"] if m["dc"] == dc))

    # The fault must meet a standby in line, not one its node is still rejoining after the
    # previous test (the rejoin would rewrite the configuration this test breaks).
    deadline = time.monotonic() + 120
    while standby_state() != "streaming":
        assert time.monotonic() < deadline, f"{member.name} never streamed before the fault"
        time.sleep(1)
    before = node_log.read_text(encoding="utf-8").count(noticed)
    for statement in breakage:
        member.execute(statement)
    deadline = time.monotonic() + 20
    while standby_state() == "streaming":  # the change takes effect in the background
        assert time.monotonic() < deadline, f"{member.name} never stopped streaming"
        time.sleep(0.5)
    deadline = time.monotonic() + 150  # a 15 s grace, a re-pointing, then a rewind if needed
    while standby_state() != "streaming":
        assert time.monotonic() < deadline, f"{member.name} was not put back in line"
        time.sleep(1)
    assert node_log.read_text(encoding="utf-8").count(noticed) > before
    books = cluster.check(wait_s=60)
    assert books["reconciled"] and books["pending_transfers"] == 0, books


def test_a_failover_cut_short_after_its_promotion_is_finished_with_the_member_it_promoted(
    cluster: Cluster,
) -> None:
    """A failover detaches every standby, writes its choice and promotes the most advanced one;
    if its node dies before the route is written, the next failover must not pick another member
    (the promoted one is no standby any more, and the other may lack commits only it has)."""
    from services.cluster.pg_group import member_instance
    from services.cluster.state import ClusterState
    from services.cluster.zookeeper import zk_client

    shard = 2
    leader = leader_of(cluster, shard)
    chosen, other = (d for d in cluster.status()["dcs"] if d != leader)
    state = ClusterState.load(cluster.home)
    assert state is not None
    # A standby an earlier test restarted may still be starting: the cut begins once both answer.
    eventually(lambda: all(_answers(member_instance(state, shard, dc)) for dc in (chosen, other)), 60,
               f"shard {shard}'s standbys to accept connections")  # fmt: skip
    # What the failover had done when it was cut short, in its order.
    for dc in (chosen, other):
        member_instance(state, shard, dc).execute("ALTER SYSTEM SET primary_conninfo = ''")
        member_instance(state, shard, dc).execute("SELECT pg_reload_conf()")
    with zk_client(state, timeout_s=10) as dcs:
        route, _ = dcs.read_route(shard)
        dcs.write_choice(shard, route.epoch, chosen)
    member_instance(state, shard, chosen).execute("SELECT pg_promote()")

    done = bankctl(cluster.home, "chaos", "kill-node", leader, timeout_s=180)
    assert done.returncode == 0 and "NO WRITE" not in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert leader_of(cluster, shard) == chosen
    logs = "".join(
        (cluster.home / "logs" / f"node-{dc}.log").read_text(encoding="utf-8") for dc in (chosen, other)
    )
    assert f"event=failover_resumed shard={shard} new_leader={chosen}" in logs
    healed = bankctl(cluster.home, "chaos", "heal", timeout_s=240)
    assert healed.returncode == 0, healed.stdout[-2000:] + healed.stderr[-2000:]
    deadline = time.monotonic() + 90  # the other standby re-pointed, the old primary rewound
    while True:
        status = next(s for s in cluster.status()["shards"] if s["shard"] == shard)
        if status["primary_dc"] == chosen and all(m["state"] == "streaming" for m in status["standbys"]):
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    books = cluster.check(wait_s=60)
    assert books["reconciled"] and books["pending_transfers"] == 0, books


def test_two_faults_on_one_dc_heal_into_one_copy_of_each_process(cluster: Cluster) -> None:
    """kill-redis-primary, then kill-dc of that DC: the heal restarts the DC (its Redis with it),
    and the Redis fault's undo must then find Redis running rather than start a second one."""
    from services.cluster.state import ClusterState

    dc = next(c["dc"] for c in cluster.components("redis") if c["role"] == "primary")
    for fault in (["kill-redis-primary"], ["kill-dc", dc]):
        done = bankctl(cluster.home, "chaos", *fault, timeout_s=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    healed = bankctl(cluster.home, "chaos", "heal", timeout_s=240)
    assert healed.returncode == 0, healed.stdout[-2000:] + healed.stderr[-2000:]
    state = ClusterState.load(cluster.home)
    assert state is not None
    recorded = {c.pid for c in state.find("redis", dc=dc)}
    spec = state.spec
    from services.cluster.netns import in_dc

    listing = subprocess.run(in_dc(spec, dc, ["ss", "-Hltnp"]), capture_output=True, text=True, check=True)
    owners = {
        int(p)
        for line in listing.stdout.splitlines()
        if ":6379 " in line
        for p in re.findall(r"pid=(\d+)", line)
    }
    assert owners == recorded, (owners, recorded)
    deadline = time.monotonic() + 90  # the DC's members rejoin in the background
    while True:
        unhealthy = [c for c in cluster.status()["components"] if not c["healthy"]]
        if not unhealthy:
            break
        assert time.monotonic() < deadline, unhealthy
        time.sleep(1)


def _answers(member: Any) -> bool:
    try:
        member.execute("SELECT 1")
    except psycopg.OperationalError:  # "the database system is starting up", or not up yet
        return False
    return True
