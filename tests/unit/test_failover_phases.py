"""A failover's phases: each one's own length, from what the node recorded and the fault's time."""

from __future__ import annotations

from services.coordinator.phases import NODE_PHASES, Timeline, of_fault, phases_ms


def record(since: float, ends: list[float]) -> dict[str, object]:
    return {"shard": 0, "since": since, "ends": dict(zip(NODE_PHASES, ends, strict=True))}


def test_each_phase_runs_from_the_end_of_the_one_before() -> None:
    ends = [100.4, 100.5, 100.55, 100.6, 100.7, 100.75, 100.8]
    got = phases_ms(record(100.0, ends), fault_at=None, first_write_at=101.0)
    assert got == {"detect": 400.0, "lock": 100.0, "probe": 50.0, "detach": 50.0, "promote": 100.0,
                   "repoint": 50.0, "route": 50.0, "first_write": 200.0}  # fmt: skip
    assert abs(sum(got.values()) - 1000.0) < 1e-6  # they add up to the recovery time


def test_with_the_faults_time_detect_runs_from_the_fault() -> None:
    got = phases_ms(record(100.3, [100.4] * 7), fault_at=100.0, first_write_at=None)
    assert got["detect"] == 400.0 and "first_write" not in got


def test_a_phase_a_resumed_failover_skipped_takes_no_time() -> None:
    timeline = Timeline(0, since=0.0)
    timeline.ends = {"detect": 1.0, "lock": 1.5, "probe": 1.6, "promote": 1.6, "repoint": 1.7, "route": 1.8}
    durations = timeline.durations_s()
    assert durations["detach"] == 0.0 and abs(durations["route"] - 0.1) < 1e-9
    assert abs(sum(durations.values()) - 1.8) < 1e-9


def test_a_fault_gets_the_first_failover_of_each_shard_it_struck() -> None:
    late = {**record(100.0, [100.4 + i / 10 for i in range(7)]), "shard": 1}  # route at 101.0
    later = {**record(150.0, [150.5 + i / 10 for i in range(7)]), "shard": 1}
    before = {**record(50.0, [50.1] * 7), "shard": 1}
    fault = {"at": 100.0, "shards": {"1": 1.5, "2": 0.2}}
    got = of_fault(fault, [later, before, late])
    assert list(got) == ["1"]  # shard 2 recovered without a failover
    assert got["1"]["detect"] == 400.0 and got["1"]["first_write"] == 500.0
