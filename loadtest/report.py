"""The run's report: report.json with every figure, report.html with the plots as images.

Everything here comes from the run's own data (Locust's CSVs, the fault records, the ledger
audit, the cost model); nothing is filled in.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from loadtest import report_page


def read_history(path: Path) -> dict[str, list[float]]:
    """Locust's per-second history (Aggregated rows): time, requests/s, failures/s, percentiles."""
    series: dict[str, list[float]] = {"t": [], "rps": [], "fps": [], "p50": [], "p95": [], "p99": []}
    start: float | None = None
    for row in csv.DictReader(path.read_text().splitlines()):
        if row["Name"] != "Aggregated" or row["50%"] == "N/A":
            continue
        stamp = float(row["Timestamp"])
        start = stamp if start is None else start
        series["t"].append(stamp - start)
        series["rps"].append(float(row["Requests/s"]))
        series["fps"].append(float(row["Failures/s"]))
        for key, column in (("p50", "50%"), ("p95", "95%"), ("p99", "99%")):
            series[key].append(float(row[column]))
    series["start"] = [start or 0.0]
    return series


def window(history: dict[str, list[float]], key: str, start: float, end: float) -> list[float]:
    """The per-second values of one series (rps, fps, ...) from `start` to `end` seconds."""
    return [v for t, v in zip(history["t"], history[key], strict=True) if start <= t < end]


def _mark_faults(axis: Any, faults: list[dict[str, Any]]) -> None:
    """A fault as a red dashed line, its undoing (a restart, a heal) as a green one."""
    for fault in faults:
        color = "green" if fault.get("undo") else "red"
        axis.axvline(fault["t"], color=color, linestyle="--", linewidth=1)
        axis.annotate(fault["label"], (fault["t"], 1), xycoords=("data", "axes fraction"),
                      rotation=90, va="top", ha="right", fontsize=8, color=color)  # fmt: skip


def _finish(fig: Any, axis: Any, out: Path, name: str, title: str, faults: list[dict[str, Any]]) -> str:
    """Titles the plot, marks the faults on it, and writes it as `name`."""
    axis.set_xlabel("seconds into the run")
    axis.set_title(title)
    _mark_faults(axis, faults)
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def plot(out: Path, data: dict[str, Any]) -> list[str]:
    history, faults = data["timeline"], data["fault_marks"]
    fig, axis = plt.subplots(figsize=(9, 3.5))
    axis.plot(history["t"], history["rps"], label="requests/s")
    axis.plot(history["t"], history["fps"], label="failures/s", color="red")
    axis.set_ylabel("per second")
    axis.legend(loc="lower left")
    images = [_finish(fig, axis, out, "throughput.png", "Throughput and errors", faults)]

    fig, axis = plt.subplots(figsize=(9, 3.5))
    for key in ("p50", "p95", "p99"):
        axis.plot(history["t"], history[key], label=key)
    axis.set_yscale("log")
    axis.set_ylabel("latency (ms, log scale)")
    axis.legend(loc="upper left")
    images.append(_finish(fig, axis, out, "latency.png", "Latency percentiles", faults))

    dcs = sorted({dc for sample in data["leaders"] for dc in sample["leaders"].values()})
    shards = sorted({int(s) for sample in data["leaders"] for s in sample["leaders"]})
    fig, axis = plt.subplots(figsize=(9, 0.6 + 0.6 * max(len(shards), 1)))
    for shard in shards:
        times = [sample["t"] for sample in data["leaders"]]
        where = [dcs.index(sample["leaders"].get(str(shard), dcs[0])) for sample in data["leaders"]]
        axis.step(
            times,
            [shard + 0.25 * w / max(len(dcs) - 1, 1) for w in where],
            where="post",
            label=f"shard {shard}",
        )
        for i, (t, w) in enumerate(zip(times, where, strict=True)):
            if i == 0 or where[i - 1] != w:  # label each leader when it starts leading
                axis.annotate(dcs[w], (t, shard + 0.25 * w / max(len(dcs) - 1, 1)), fontsize=8)
    axis.set_yticks(shards, [f"shard {s}" for s in shards])
    images.append(_finish(fig, axis, out, "leaders.png", "Leader DC of each shard (labels: the DC)", faults))
    if data.get("scale_out"):
        images.append(plot_slots(out, data, faults))
    return images


def plot_slots(out: Path, data: dict[str, Any], faults: list[dict[str, Any]]) -> str:
    """Slots owned by each shard over time, each batch's flip marked."""
    samples = [s for s in data["leaders"] if "slots" in s]
    shards = sorted({int(k) for s in samples for k in s["slots"]})
    fig, axis = plt.subplots(figsize=(9, 3.5))
    for shard in shards:
        axis.step([s["t"] for s in samples], [s["slots"].get(str(shard), 0) for s in samples],
                  where="post", label=f"shard {shard}")  # fmt: skip
    for move in data["scale_out"]["moves"]:
        if move.get("flipped_t") is not None:
            axis.axvline(move["flipped_t"], color="#999", linewidth=0.6)
    axis.set_ylabel("slots owned")
    if shards:
        axis.legend(loc="center left")
    return _finish(fig, axis, out, "slots.png", "Slots per shard (grey: a batch's flip)", faults)


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    cost = data["cost"]
    rows = [
        ("scenario", f"{data['scenario']} ({data['duration_s']:.0f} s, {data['users']} users)"),
        (
            "throughput",
            f"{data['throughput_tps']:.0f} money movements/s ({data['requests_per_s']:.0f} requests/s)",
        ),
        ("latency p50 / p95 / p99", "{p50} / {p95} / {p99} ms".format(**data["latency_ms"])),
        ("client operations", f"{data['requests']['total']:,} ({data['requests']['failed']:,} failed)"),
        ("availability per operation", f"{data['availability']:.4%}"),
    ]
    calls = data.get("calls")
    if calls:
        codes = ", ".join(f"{n} {c}" for c, n in sorted(calls["failed_by_code"].items()))
        rows += [
            (
                "calls (each gateway tried)",
                f"{calls['calls']:,} ({calls['failed']:,} failed{': ' + codes if codes else ''})",
            ),
            ("availability per call", f"{data['availability_per_call']:.4%}"),
        ]
    for failover in data["failovers"]:
        rows.append((
            f"{failover['fault']} {failover['dc']}",
            f"RTO {failover['rto_s']} s on shards {', '.join(map(str, failover['shards']))},"
            f" {failover['failed_requests']} operations failed",
        ))  # fmt: skip
    rows += drill_rows(data.get("drill"))
    rows += scale_out_rows(data.get("scale_out"))
    rows += [
        ("acknowledged movements", f"{data['acked_transfers']:,}"),
        ("acknowledged and lost", str(data["acked_lost"])),
        ("applied twice", str(data["duplicates"])),
        ("ledger invariant", "holds" if data["invariant_ok"] else "BROKEN"),
        (
            "cost per account-year",
            f"{cost['per_account_year_cny']:.6f} yuan (reference: {cost['reference_cny']} yuan)",
        ),
    ]
    return rows


def drill_rows(card: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The DC drill's scorecard: two automatic, two zero, and each shard's RTO with its phases."""
    if not card:
        return []
    verdict = " · ".join(
        f"{name.replace('_', ' ')} {'PASS' if ok else 'FAIL'}" for name, ok in card["scores"].items()
    )
    rows = [(f"drill: kill-dc {card['dc']}", verdict)]
    for shard, rto_s in card["rto_s"].items():
        phases = card["phases_ms"].get(shard)
        parts = " + ".join(f"{name} {ms:.0f}" for name, ms in (phases or {}).items())
        rows.append((f"  shard {shard} RTO", f"{rto_s} s" + (f" = {parts} ms" if parts else "")))
    rows.append(("  failed operations / calls", f"{card['failed_operations']} / {card['failed_calls']}"))
    if card.get("not_whole"):
        rows.append(("  not whole at the end", card["not_whole"]))
    return rows


def scale_out_rows(grown: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not grown:
        return []
    if grown.get("error"):
        return [("scale-out", f"FAILED: {grown['error']}")]
    freeze, rates = grown["freeze_ms"], grown.get("throughput_rps", {})
    added = f"shard {grown.get('shard')} added at {grown.get('started_t')} s"
    moved = f"{freeze['count']} batches of {grown['batch']} slots moved by {grown.get('finished_t')} s"
    rate = " / ".join(str(rates.get(key)) for key in ("before", "during", "after"))
    lowest = (
        f"lowest 10 s window: {rates.get('lowest_moving_window_ratio')} of before while slots moved,"
        f" {rates.get('lowest_window_ratio')} from add-shard to the copies removed"
    )
    errors = f"{grown.get('client_errors')} of {grown.get('requests') or 0:,} requests"
    return [
        ("scale-out", f"{added}, {moved}"),
        ("freeze per batch p50 / p99 / max", f"{freeze['p50']} / {freeze['p99']} / {freeze['max']} ms"),
        ("requests/s before / during / after", f"{rate} ({lowest})"),
        ("client errors while growing", errors),
    ]


def plot_cost(out: Path, cost: dict[str, Any]) -> str:
    """The cost per account-year by part, beside the published reference, as bars."""
    labels = [*report_page.COST_PARTS.values(), "Total"]
    values = [*(cost["breakdown"][key] for key in report_page.COST_PARTS), cost["per_account_year_cny"]]
    fig, axis = plt.subplots(figsize=(9, 2.6))
    bars = axis.barh(labels[::-1], values[::-1], color=["#1a73e8", "#9aa0a6", "#9aa0a6", "#9aa0a6"])
    axis.bar_label(bars, labels=[f"{v:.6f}" for v in values[::-1]], padding=3, fontsize=8)
    axis.set_xlabel(f"yuan per account per year (reference: {cost['reference_cny']} yuan)")
    axis.set_xlim(0, max(values) * 1.3 or 1)
    axis.set_title("Cost per account-year, by part")
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=90)
    plt.close(fig)
    return "cost.png"


def write(out: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    images = plot(out, data)
    cost_chart = plot_cost(out, data["cost"])
    data = {**data, "images": [*images, cost_chart]}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    html_path = out / "report.html"
    grown = report_page.scale_out_section(data.get("scale_out"), scale_out_rows(data.get("scale_out")))
    plots = [name for name in images if name != "slots.png"]
    page = report_page.page(data, summary_rows(data), plots, cost_chart, grown)
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path


def read_calls(directory: Path) -> dict[str, Any]:
    """Every load process's call counts, summed."""
    total: dict[str, Any] = {"calls": 0, "failed": 0, "failed_by_code": {}}
    for path in sorted(directory.glob("calls-*.json")):
        figures = json.loads(path.read_text(encoding="utf-8"))
        total["calls"] += figures["calls"]
        total["failed"] += figures["failed"]
        for code, count in figures["failed_by_code"].items():
            total["failed_by_code"][code] = total["failed_by_code"].get(code, 0) + count
    return total
