"""`bankctl` as a person uses it against a running cluster: the bank's own operations (tables
and JSON, decimal amounts, refusals with their code and exit status), global options on either
side of the command, and every labelled metric present at zero from the start."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from services.common.identifiers import make_account_number, slot_of_account
from tests.integration.cluster_helpers import BANKCTL, Cluster, bankctl


def cli(cluster: Cluster, *args: str) -> tuple[int, str, str]:
    """`bankctl ARGS --home HOME` (the global option after the command, as a git user writes it)."""
    done = subprocess.run([*BANKCTL, *args, "--home", str(cluster.home)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def cli_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    code, out, err = cli(cluster, *args, "--json")
    assert code == 0, (args, out, err)
    return dict(json.loads(out))


def test_the_global_home_option_goes_before_or_after_the_command(bank_cluster: Cluster) -> None:
    before = bankctl(bank_cluster.home, "status", "--json")
    code, out, err = cli(bank_cluster, "status", "--json")
    assert before.returncode == code == 0, err
    assert json.loads(out)["shards"] == json.loads(before.stdout)["shards"]
    code, _, err = cli(bank_cluster, "chaos", "heal")
    assert code == 0, err


def test_a_customer_session_through_the_command_line(bank_cluster: Cluster) -> None:
    alice = cli_json(bank_cluster, "account", "open", "cli-alice")["account"]["account_number"]
    bob = cli_json(bank_cluster, "account", "open", "cli-bob-7")["account"]["account_number"]
    deposited = cli_json(bank_cluster, "deposit", alice, "100.50", "--currency", "CNY")
    assert int(deposited["balance_after"]) == 10_050
    moved = cli_json(bank_cluster, "transfer", alice, bob, "12.34")
    assert moved["status"] in ("TRANSFER_STATUS_COMMITTED", "TRANSFER_STATUS_PENDING")
    code, table, _ = cli(bank_cluster, "account", "show", alice)
    assert code == 0 and "88.16" in table and "ACTIVE" in table, table
    code, out, _ = cli(bank_cluster, "transfer-status", moved["transfer_id"])
    assert code == 0 and moved["transfer_id"] in out
    code, statement, _ = cli(bank_cluster, "statement", alice)
    lines = [line for line in statement.splitlines() if line.startswith("20")]
    assert code == 0 and len(lines) == 2, statement
    assert "100.50" in lines[0] and "-12.34" in lines[1] and bob in lines[1], statement
    assert lines[1].split()[6] == "88.16", statement  # the balance after the newest line, which is last
    assert dt.date.fromisoformat(lines[1].split()[0]), statement  # its business date, then when posted
    page = cli_json(bank_cluster, "statement", alice, "--page-size", "1")
    assert len(page["postings"]) == 1 and page["next_page_token"]
    rest = cli_json(
        bank_cluster, "statement", alice, "--page-size", "1", "--page-token", page["next_page_token"]
    )
    assert int(rest["postings"][0]["amount"]) == -1_234
    cli_json(bank_cluster, "withdraw", alice, "0.16")
    assert cli_json(bank_cluster, "account", "freeze", alice, "--reason", "lost card")["account"][
        "status"
    ] == ("ACCOUNT_STATUS_FROZEN")
    cli_json(bank_cluster, "account", "unfreeze", alice)
    cli_json(bank_cluster, "withdraw", alice, "88.00")
    assert cli_json(bank_cluster, "account", "close", alice)["account"]["status"] == "ACCOUNT_STATUS_CLOSED"


def test_a_refusal_prints_its_code_reason_and_message_and_exits_1(bank_cluster: Cluster) -> None:
    carol = cli_json(bank_cluster, "account", "open", "cli-carol")["account"]["account_number"]
    code, out, err = cli(bank_cluster, "withdraw", carol, "5.00")
    assert code == 1 and out == ""
    assert "FAILED_PRECONDITION" in err and "INSUFFICIENT_FUNDS" in err and "available" in err, err
    refused = json.loads(cli(bank_cluster, "deposit", carol, "1.005", "--json")[1])["error"]
    assert refused["code"] == "INVALID_ARGUMENT" and "amount_decimal" in refused["message"], refused
    missing = make_account_number(slot_of_account(carol), 99_999_999_999)
    code, _, err = cli(bank_cluster, "transfer", carol, missing, "1.00")
    assert code == 1 and "NOT_FOUND" in err and "to_account" in err, err
    shown = cli_json(bank_cluster, "account", "show", carol)["account"]
    assert int(shown.get("balance", 0)) == 0  # nothing was written by the refusals


def test_every_labelled_series_is_there_at_zero_for_every_shard(bank_cluster: Cluster) -> None:
    shards = {str(s["shard"]) for s in bank_cluster.status()["shards"]}
    for kind, name, labels in (
        ("node", "bank_failovers_total", {"outcome": "done"}),
        ("node", "bank_standby_repairs_total", {"how": "rewound"}),
        ("gateway", "bank_gateway_held_requests", {}),
        ("gateway", "bank_gateway_retries_total", {"code": "UNAVAILABLE"}),
    ):
        for component in bank_cluster.components(kind):
            url = f"http://{component['host']}:{component['metrics_port']}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            seen = {
                sample.labels["shard"]
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
            }
            assert seen >= shards, (kind, component["dc"], name, seen)


def test_status_draws_the_running_cluster_with_its_leaders(bank_cluster: Cluster, tmp_path: Path) -> None:
    picture = tmp_path / "bank.svg"
    code, out, err = cli(bank_cluster, "status", "--svg", str(picture))
    assert code == 0 and str(picture) in out, err
    svg = picture.read_text(encoding="utf-8")
    for shard in bank_cluster.status()["shards"]:
        assert svg.count(f"PostgreSQL shard {shard['shard']}: PRIMARY") == 1
    assert "active faults: " in svg
