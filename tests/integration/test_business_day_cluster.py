"""The bank's business date on a whole cluster: one date in ZooKeeper, every shard's database
on it, `bankctl day close` moving the bank and every shard to the next date, and an account's
statement showing each posting's date, through a gateway."""

from __future__ import annotations

import datetime as dt
import json

from bank.v1 import ledger_pb2
from tests.integration.cluster_helpers import Cluster, bankctl


def day(cluster: Cluster, *args: str) -> dict[str, object]:
    done = bankctl(cluster.home, "day", *args, "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_day_close_moves_the_bank_and_every_shard(bank_cluster: Cluster) -> None:
    before = day(bank_cluster)
    today = dt.date.fromisoformat(str(before["business_date"]))
    shards = before["shards"]
    assert isinstance(shards, list) and len(shards) == 3
    assert {row["business_date"] for row in shards} == {today.isoformat()}
    assert before["time_zone"] == "Asia/Shanghai" and before["day_seconds"] == 0
    with bank_cluster.client() as client:
        source = client.open_account("day-source", "CNY").account_number
        target = client.open_account("day-target", "CNY").account_number
        client.deposit(source, 1_000, "CNY")
        closed = day(bank_cluster, "close")
        tomorrow = today + dt.timedelta(days=1)
        assert closed["business_date"] == tomorrow.isoformat()
        assert {row["business_date"] for row in closed["shards"]} == {tomorrow.isoformat()}  # type: ignore[attr-defined]
        client.transfer(source, target, 10, "CNY")
        statement = client.call(
            "ledger", "ListPostings", ledger_pb2.ListPostingsRequest(account_number=source, page_size=10)
        )
    assert [p.business_date for p in statement.postings] == [today.isoformat(), tomorrow.isoformat()]
    again = bankctl(bank_cluster.home, "day", "close")
    assert again.returncode == 0 and "every shard on" in again.stdout
