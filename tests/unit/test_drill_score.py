"""The drill's scorecard: what makes each of the four scores pass or fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.chaos.drill import render, score
from services.chaos.workload import History, Op

CALLS = {"calls": 120, "failed": 3, "failed_by_code": {"UNAVAILABLE": 3}}
CLEAN: dict[str, Any] = {"reconciled": True, "pending": 0, "anomalies": []}


def cut(rto_s: float | None = 0.9) -> dict[str, Any]:
    return {"fault": "kill-dc", "target": "dc1", "at": 100.0, "shards": {"0": rto_s}}


def history(tmp_path: Path, outcomes: list[str]) -> History:
    kept = History(tmp_path / "history.jsonl")
    for number, outcome in enumerate(outcomes):
        kept.ops[f"r{number}"] = Op(f"r{number}", "a", "b", 1, outcome=outcome)
    return kept


def failover(route_at: float) -> dict[str, Any]:
    phases = ["detect", "lock", "probe", "detach", "promote", "repoint", "route"]
    return {"shard": 0, "since": 99.95, "ends": {p: route_at - 0.01 * (6 - i) for i, p in enumerate(phases)}}


def test_a_clean_drill_passes_all_four_with_its_phases(tmp_path: Path) -> None:
    result = score(cut(), history(tmp_path, ["ok"] * 10), CLEAN, 0, CALLS, 11.2, [failover(100.5)])
    assert result["scores"] == dict.fromkeys(
        ["auto_switch", "auto_recovery", "zero_loss", "zero_interruption"], True
    )
    assert result["ok"] and result["acked"] == 10 and result["failed_calls"] == 3
    assert abs(sum(result["phases_ms"]["0"].values()) - 900.0) < 1e-6  # the phases add up to the RTO
    assert "drill passed" in render({**result, "cut": "kill", "dc": "dc1", "hold_s": 12.0})


def test_each_score_fails_for_its_own_reason(tmp_path: Path) -> None:
    lost = {**CLEAN, "anomalies": [{"kind": "lost", "transfer_ids": ["T1"], "detail": ""}]}
    results = {
        "auto_switch": score(cut(None), history(tmp_path, ["ok"]), CLEAN, 0, CALLS, 5.0, []),
        "auto_recovery": score(cut(), history(tmp_path, ["ok"]), CLEAN, 0, CALLS, None, []),
        "zero_loss": score(cut(), history(tmp_path, ["ok"]), lost, 0, CALLS, 5.0, []),
        "zero_interruption": score(cut(), history(tmp_path, ["ok", "info"]), CLEAN, 1, CALLS, 5.0, []),
    }
    for failing, result in results.items():
        assert [name for name, passed in result["scores"].items() if not passed] == [failing]
        assert not result["ok"]
    assert results["zero_loss"]["lost"] == 1
