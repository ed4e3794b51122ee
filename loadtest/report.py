"""The run's report: report.json with every figure, report.html with the plots as images.

Everything here comes from the run's own data (Locust's CSVs, the fault records, the ledger
audit, the cost model); nothing is filled in.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


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


def _mark_faults(axis: Any, faults: list[dict[str, Any]]) -> None:
    for fault in faults:
        axis.axvline(fault["t"], color="red", linestyle="--", linewidth=1)
        axis.annotate(fault["label"], (fault["t"], 1), xycoords=("data", "axes fraction"),
                      rotation=90, va="top", ha="right", fontsize=8, color="red")  # fmt: skip


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
    return images


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    cost = data["cost"]
    rows = [
        ("scenario", f"{data['scenario']} ({data['duration_s']:.0f} s, {data['users']} users)"),
        (
            "throughput",
            f"{data['throughput_tps']:.0f} money movements/s ({data['requests_per_s']:.0f} requests/s)",
        ),
        ("latency p50 / p95 / p99", "{p50} / {p95} / {p99} ms".format(**data["latency_ms"])),
        ("requests", f"{data['requests']['total']:,} ({data['requests']['failed']:,} failed)"),
        ("availability", f"{data['availability']:.4%}"),
    ]
    for failover in data["failovers"]:
        rows.append((
            f"{failover['fault']} {failover['dc']}",
            f"RTO {failover['rto_s']} s on shards {failover['shards']},"
            f" {failover['failed_requests']} requests failed",
        ))  # fmt: skip
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


def write(out: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    images = plot(out, data)
    data = {**data, "images": images}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary_rows(data)
    )
    cost = data["cost"]
    breakdown = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in cost["breakdown"].items())
    assumptions = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in cost["assumptions"].items())
    derived = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in cost["derived"].items())
    figures = "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in images)
    title = f"bank-sim run {html.escape(data['run_id'])}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}th{{text-align:left;padding-right:2em}}
td,th{{border-bottom:1px solid #ddd;padding:.2em}}</style></head><body>
<h1>bank-sim: {html.escape(data["scenario"])} run {html.escape(data["run_id"])}</h1>
<table>{table}</table>{figures}
<h2>Cost per account per year</h2><ul>{breakdown}</ul><h3>derived</h3><ul>{derived}</ul>
<h3>assumptions (override with bankctl demo --help)</h3><ul>{assumptions}</ul>
<p>Every figure comes from this run: Locust's CSVs beside this file, the faults as bankctl recorded them,
the ledger audited afterwards.</p></body></html>"""
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path
