"""Every query of every dashboard under deploy/grafana/dashboards, asked of the real Prometheus
that `bankctl up --with-prometheus` started, after a short load with one kill-dc: each must
parse and return data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services.cluster.prometheus import query
from tests.chaos.helpers import leader_of, run_fault
from tests.integration.cluster_helpers import Cluster
from tests.integration.conftest import report

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expression) of every target of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["uid"] == path.stem, f"{path.name}: the uid must be fixed and equal to the file name"
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((board["uid"], panel["title"], target["expr"]))
    return found


def test_the_dashboards_are_the_four_promised_with_fixed_uids() -> None:
    uids = {uid for uid, _, _ in dashboard_queries()}
    assert uids == {"bank-overview", "bank-failover", "bank-replication", "bank-capacity"}


def test_kill_dc_under_load_then_every_dashboard_query_returns_data(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config
) -> None:
    """The kill-dc test of the fault suite (recovery under 5 s, nothing lost, no failback after
    the restart), then the dashboards' queries over what Prometheus saw of it."""
    prometheus = cluster.components("prometheus")
    assert len(prometheus) == 1 and prometheus[0]["healthy"], prometheus
    host, port = prometheus[0]["host"], prometheus[0]["port"]
    dc = leader_of(cluster, 0)
    entry = run_fault(cluster, accounts, pytestconfig, ["kill-dc", dc], ["restart-dc", dc])
    assert "0" in entry["shards"]  # type: ignore[operator]
    assert leader_of(cluster, 0) != dc  # no automatic failback: the restarted DC follows
    targets = query(host, port, 'up{job="bank"}')
    assert {(t["metric"]["kind"], t["metric"]["dc"]) for t in targets} == {
        (kind, f"dc{i}") for kind in ("node", "gateway") for i in (1, 2, 3)
    }
    empty: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 30  # the restarted DC's processes are scraped within seconds
    for uid, title, expr in dashboard_queries():
        while not query(host, port, expr):  # a refused query raises: it must parse
            if time.monotonic() > deadline:
                empty.append((uid, title, expr))
                break
            time.sleep(1)
    assert empty == [], f"queries that returned no data: {empty}"
    failovers = query(host, port, "sum(bank_failovers_total)")
    report(pytestconfig, f"\n[dashboards] {len(dashboard_queries())} queries answered; failovers {failovers}")
    assert float(failovers[0]["value"][1]) >= 1
