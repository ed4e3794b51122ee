"""Labelled series exist at zero from a process's start, so that a dashboard reads 0, not "No data"."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.rpc import metrics


def value(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_node_shows_zero_failovers_and_repairs_for_every_shard_before_any() -> None:
    assert value("bank_failovers_total", {"shard": "41", "outcome": "done"}) is None
    metrics.zero_node_series([41, 42])
    for shard in ("41", "42"):
        for outcome in metrics.FAILOVER_OUTCOMES:
            assert value("bank_failovers_total", {"shard": shard, "outcome": outcome}) == 0.0
        for how in metrics.REPAIRS:
            assert value("bank_standby_repairs_total", {"shard": shard, "how": how}) == 0.0
        assert value("bank_failover_duration_seconds_count", {"shard": shard}) == 0.0
    assert value("bank_failovers_total", {"shard": "43", "outcome": "done"}) is None


def test_a_gateway_shows_zero_held_requests_and_retries_for_every_shard() -> None:
    metrics.zero_gateway_series([51])
    assert value("bank_gateway_held_requests", {"shard": "51"}) == 0.0
    for code in metrics.RETRY_CODES:
        assert value("bank_gateway_retries_total", {"shard": "51", "code": code}) == 0.0


def test_zeroing_again_keeps_what_was_counted() -> None:
    metrics.zero_node_series([61])
    metrics.FAILOVERS.labels(shard="61", outcome="done").inc()
    metrics.zero_node_series([61])
    assert value("bank_failovers_total", {"shard": "61", "outcome": "done"}) == 1.0
