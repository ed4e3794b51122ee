"""report.html reads like a report: the verdict first, every image it names exists, every fault
and its undoing is marked, and no raw key of the run's data shows through."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from loadtest import report
from services.cli import scale_out
from services.cost.model import Assumptions, Measured, per_account_year


def run_data(lost: int = 0) -> dict[str, Any]:
    seconds = [float(t) for t in range(60)]
    measured = Measured(cpu_seconds=50.0, window_s=25.0, transactions=4_000, memory_bytes=2 << 30,
                        disk_bytes=1 << 30, accounts=100_000)  # fmt: skip
    return {
        "run_id": "20261130-000000", "scenario": "dc-failover", "users": 24, "duration_s": 60,
        "throughput_tps": 140.0, "requests_per_s": 220.0, "latency_ms": {"p50": 70, "p95": 190, "p99": 270},
        "requests": {"total": 13_200, "failed": 3}, "availability": 0.999773,
        "failovers": [{"fault": "kill-dc", "dc": "dc1", "shards": [0], "rto_s": 3.2,
                       "rto_per_shard_s": {"0": 3.2}, "failed_requests": 3}],
        "acked_transfers": 8_000, "acked_lost": lost, "duplicates": 0, "invariant_ok": lost == 0,
        "books": {}, "cost": per_account_year(measured, Assumptions()),
        "timeline": {"t": seconds, "rps": [200.0] * 60, "fps": [0.0] * 60, "p50": [70.0] * 60,
                     "p95": [190.0] * 60, "p99": [270.0] * 60},
        "leaders": [{"t": t, "leaders": {"0": "dc1" if t < 30 else "dc2", "1": "dc2"}} for t in seconds],
        "fault_marks": [{"t": 30.0, "label": "kill-dc dc1"},
                        {"t": 55.0, "label": "restart-dc dc1", "undo": True}],
    }  # fmt: skip


def test_the_page_starts_with_the_verdict_and_names_only_images_that_exist(tmp_path: Path) -> None:
    _, html_path = report.write(tmp_path, run_data())
    page = html_path.read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"throughput.png", "latency.png", "leaders.png", "cost.png"} <= set(images)
    assert all((tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 1000 for name in images)
    body = page.split("<body>", 1)[1]
    assert body.index("PASS") < body.index("<img")
    assert "Nothing lost: 0 of 8,000" in page and "99.9773%" in page
    assert "kill-dc dc1 at 30 s" in page and "restart-dc dc1 at 55 s" in page


def test_no_raw_key_of_the_data_shows_in_the_page(tmp_path: Path) -> None:
    data = run_data()
    _, html_path = report.write(tmp_path, data)
    text = re.sub(r"<[^>]+>", " ", html_path.read_text(encoding="utf-8"))
    cost = data["cost"]
    keys = [*cost["breakdown"], *cost["derived"], *cost["assumptions"], *cost["measured"], *data]
    shown = [key for key in keys if "_" in key and key in text]
    assert shown == [], shown
    assert "yuan per GB-month" in text and "What the model leaves out" in text


def test_lost_money_turns_the_verdict_into_a_failure(tmp_path: Path) -> None:
    _, html_path = report.write(tmp_path, run_data(lost=2))
    page = html_path.read_text(encoding="utf-8")
    assert "FAIL" in page and "MONEY LOST OR DOUBLED: 2 of 8,000" in page and ">PASS<" not in page


def grown(error: str | None = None) -> dict[str, Any]:
    """A scale-out at 20 s: shard 2 added by 25 s, two batches moved by 38 s and cleaned by 40 s,
    with two failures in them."""
    moves = [
        {"slots": [0, 31], "from": 0, "to": 2, "state": "done", "freeze_ms": 120.0, "freeze_phases_ms": {},
         "copied_rows": 900, "started_t": 25.0, "flipped_t": 30.0},
        {"slots": [512, 543], "from": 1, "to": 2, "state": "done", "freeze_ms": 310.0, "freeze_phases_ms": {},
         "copied_rows": 950, "started_t": 31.0, "flipped_t": 38.0},
    ]  # fmt: skip
    record = {"at_s": 20.0, "batch": 32, "error": error, "moves": [] if error else moves, "shard": 2,
              "started_t": 20.0, "added_t": 24.0, "finished_t": 40.0}  # fmt: skip
    history = run_data()["timeline"]
    history = {
        **history,
        "rps": [200.0] * 20 + [100.0] * 5 + [150.0] * 15 + [210.0] * 20,
        "fps": [0.0] * 33 + [2.0] + [0.0] * 26,
    }
    return scale_out.figures(record, history, 60.0)


def test_a_scale_out_has_its_section_figures_and_plot(tmp_path: Path) -> None:
    data = {**run_data(), "scale_out": grown()}
    data["leaders"] = [{**s, "slots": {"0": 512, "1": 512} if s["t"] < 30 else {"0": 480, "1": 512, "2": 32}}
                       for s in data["leaders"]]  # fmt: skip
    figures = data["scale_out"]
    assert figures["freeze_ms"]["p50"] == 215.0 and figures["freeze_ms"]["max"] == 310.0
    assert figures["throughput_rps"]["before"] == 200.0 and figures["throughput_rps"]["after"] == 210.0
    # the shard added at 20-25 s (100 requests/s), the slots moved at 25-38 s (150)
    assert figures["throughput_rps"]["lowest_window_ratio"] == 0.625 and figures["client_errors"] == 2
    assert figures["throughput_rps"]["lowest_moving_window_ratio"] == 0.75
    _, html_path = report.write(tmp_path, data)
    page = html_path.read_text(encoding="utf-8")
    assert "slots.png" in page and (tmp_path / "slots.png").stat().st_size > 1000
    assert "Grown online: shard 2 added and 2 batches" in page and "PASS" in page
    text = re.sub(r"<[^>]+>", " ", page)
    assert [key for key in figures if "_" in key and key in text] == []


def test_a_failed_scale_out_fails_the_verdict(tmp_path: Path) -> None:
    data = {**run_data(), "scale_out": grown(error="LaunchError: no room")}
    page = report.write(tmp_path, data)[1].read_text(encoding="utf-8")
    assert "Growing the bank FAILED: LaunchError: no room" in page and ">PASS<" not in page


def drill_card(failed_operations: int) -> dict[str, Any]:
    scores = {"auto_switch": True, "auto_recovery": True, "zero_loss": True,
              "zero_interruption": failed_operations == 0}  # fmt: skip
    return {
        "cut": "kill", "dc": "dc1", "rto_s": {"0": 0.93},
        "phases_ms": {"0": {"detect": 366.0, "lock": 24.0, "probe": 32.0, "detach": 57.0, "promote": 73.0,
                            "repoint": 15.0, "route": 10.0, "first_write": 354.0}},
        "failed_operations": failed_operations, "failed_calls": 8, "not_whole": "", "scores": scores,
        "ok": all(scores.values()),
    }  # fmt: skip


def test_the_drill_scorecard_shows_each_score_and_the_phases(tmp_path: Path) -> None:
    calls = {"calls": 13_300, "failed": 8, "failed_by_code": {}}
    data = {**run_data(), "drill": drill_card(0), "calls": calls, "availability_per_call": 0.999398}
    _, html_path = report.write(tmp_path, data)
    page = html_path.read_text(encoding="utf-8")
    assert "auto switch PASS" in page and "zero interruption PASS" in page
    assert "detect 366 + lock 24" in page and "first_write 354 ms" in page
    assert "99.9398% per call" in page
    assert "PASS" in page.split("<body>", 1)[1][:2000]


def test_an_interrupted_drill_fails_the_verdict(tmp_path: Path) -> None:
    _, html_path = report.write(tmp_path, {**run_data(), "drill": drill_card(3)})
    page = html_path.read_text(encoding="utf-8")
    assert "zero interruption FAIL" in page and "zero interruption NO" in page
    assert "FAIL" in page.split("<body>", 1)[1][:2000]
