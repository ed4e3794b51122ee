"""`bankctl drill` on the shared fault cluster: a DC leading a shard is killed under load, and
the drill scores two automatic and two zero, with each failover's phases adding up to its RTO."""

from __future__ import annotations

import json

import pytest

from tests.chaos.helpers import leader_of
from tests.integration.cluster_helpers import Cluster, bankctl
from tests.integration.conftest import report

SCORES = {"auto_switch", "auto_recovery", "zero_loss", "zero_interruption"}


def test_a_killed_dc_is_lost_without_one_failed_operation(
    cluster: Cluster, pytestconfig: pytest.Config
) -> None:
    dc = leader_of(cluster, 0)
    done = bankctl(cluster.home, "drill", "--cut", "kill", "--dc", dc, "--for", "8", "--json", timeout_s=420)
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout)
    report(
        pytestconfig,
        f"[drill] kill {dc}: RTO {result['rto_s']}, phases {result['phases_ms']}, operations "
        f"{result['operations']} ({result['failed_operations']} failed), calls {result['calls']} "
        f"({result['failed_calls']} failed), whole again {result['recovered_s']} s after the heal",
    )
    assert set(result["scores"]) == SCORES
    assert result["scores"] == dict.fromkeys(SCORES, True), (result, done.stderr[-3000:])
    assert done.returncode == 0 and result["ok"]
    assert result["failed_operations"] == 0 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["acked"] > 0 and result["operations"] >= result["acked"]
    assert "0" in result["rto_s"] and result["rto_s"]["0"] is not None
    phases = result["phases_ms"]["0"]
    assert list(phases) == ["detect", "lock", "probe", "detach", "promote", "repoint", "route", "first_write"]
    assert abs(sum(phases.values()) / 1000 - result["rto_s"]["0"]) < 0.05
    assert leader_of(cluster, 0) != dc  # no switch back was asked for


def test_a_drill_refuses_an_unknown_dc_and_changes_nothing(cluster: Cluster) -> None:
    before = {s: leader_of(cluster, s) for s in range(3)}
    done = bankctl(cluster.home, "drill", "--cut", "kill", "--dc", "dc9", "--for", "5")
    assert done.returncode == 2 and "no DC 'dc9'" in done.stderr
    assert {s: leader_of(cluster, s) for s in range(3)} == before
