"""report.html as a person reads it: the verdict first, then the figures, the plots, the cost as
a labelled breakdown with units, what the cost model leaves out, and its assumptions as a table.
Every key of the run's data is shown under a label of its own, never as the key itself."""

from __future__ import annotations

import html
from typing import Any

# Cost parts: key -> label (every part is yuan per account per year).
COST_PARTS = {"cpu_cny": "CPU", "memory_cny": "Memory", "disk_cny": "Disk"}
# Derived figures: key -> (label, unit).
DERIVED = {
    "cpu_ms_per_transaction": ("CPU per money movement, whole cluster", "ms"),
    "vcpus_provisioned": ("vCPUs for the projected bank", "vCPU"),
    "memory_gb_provisioned": ("Memory for the projected bank", "GB"),
    "disk_gb": ("Disk for the projected bank", "GB"),
}
# Assumptions: key -> (label, unit); `bankctl demo --help` names the option of each.
ASSUMPTIONS = {
    "profile_accounts": ("Accounts of the projected bank", "accounts"),
    "transactions_per_account_year": ("Money movements per account", "per year"),
    "peak_to_average": ("Busiest hour over the average hour", "ratio"),
    "dc_loss_headroom": ("Headroom to carry a lost data center", "ratio"),
    "cny_per_vcpu_hour": ("Price of a vCPU", "yuan per hour"),
    "cny_per_gb_hour": ("Price of memory", "yuan per GB-hour"),
    "cny_per_gb_month": ("Price of disk", "yuan per GB-month"),
}
LEFT_OUT = (
    "network equipment and traffic between data centers",
    "staff, software licences, buildings and power beyond the priced hardware",
    "backups and archives beyond the live replicas",
    "the load generator, Prometheus and the operating system's own use",
    "growth of the data over years (disk is sized for the accounts as they are now)",
)
STYLE = """body{font-family:sans-serif;max-width:62em;margin:2em auto;color:#222}
th{text-align:left;padding-right:2em;font-weight:normal;color:#555}
td,th{border-bottom:1px solid #ddd;padding:.25em}td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.1em}
.pass{background:#e6f4ea;border:1px solid #34a853}.fail{background:#fce8e6;border:1px solid #d93025}
img{max-width:100%}"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _number(value: float, digits: int = 6) -> str:
    return f"{value:,.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}"


def verdict(data: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether the run kept its promises, and each promise in a sentence."""
    nothing_lost = data["acked_lost"] == 0 and data["duplicates"] == 0
    lines = [
        f"{'Nothing lost' if nothing_lost else 'MONEY LOST OR DOUBLED'}: {data['acked_lost']} of "
        f"{data['acked_transfers']:,} acknowledged money movements lost, {data['duplicates']} applied twice.",
        f"The books {'reconcile' if data['invariant_ok'] else 'DO NOT reconcile'}"
        " (sum of balances and money in flight against money deposited less withdrawn).",
        f"Availability {data['availability']:.4%} per client operation: {data['requests']['failed']:,} of "
        f"{data['requests']['total']:,} operations failed"
        + (
            f"; {data['availability_per_call']:.4%} per call ({data['calls']['failed']:,} of"
            f" {data['calls']['calls']:,} calls to a gateway failed, each retried at another)."
            if data.get("calls")
            else "."
        ),
    ]
    for failover in data["failovers"]:
        lines.append(
            f"{failover['fault']} {failover['dc']}: every shard led again after {failover['rto_s']} s"
            f" (shards {', '.join(map(str, failover['shards']))}), {failover['failed_requests']} operations"
            " failed around it."
        )
    grown = data.get("scale_out")
    if grown:
        lines.append(scale_out_line(grown))
    drill = data.get("drill")
    if drill:
        scores = ", ".join(
            f"{name.replace('_', ' ')} {'yes' if ok else 'NO'}" for name, ok in drill["scores"].items()
        )
        lines.append(f"Drill: {scores}.")
    grew = not grown or not grown.get("error")
    drilled = not drill or bool(drill["ok"])
    return nothing_lost and bool(data["invariant_ok"]) and grew and drilled, lines


def scale_out_line(grown: dict[str, Any]) -> str:
    if grown.get("error"):
        return f"Growing the bank FAILED: {grown['error']}."
    freeze, rates = grown["freeze_ms"], grown.get("throughput_rps", {})
    return (
        f"Grown online: shard {grown.get('shard')} added and {freeze['count']} batches of slots moved onto it"
        f" under load; writes of a batch frozen {freeze['p50']} ms at the median, {freeze['max']} ms at most;"
        f" {grown.get('client_errors')} client errors meanwhile; the slowest 10 s while slots moved served"
        f" {rates.get('lowest_moving_window_ratio')} of the rate before"
        f" ({rates.get('lowest_window_ratio')} from the shard's creation to the copies' removal)."
    )


def _table(rows: list[tuple[str, str]], numeric: bool = False) -> str:
    cell = '<td class="n">' if numeric else "<td>"
    return (
        "<table>" + "".join(f"<tr><th>{_esc(k)}</th>{cell}{_esc(v)}</td></tr>" for k, v in rows) + "</table>"
    )


def cost_section(cost: dict[str, Any], chart: str | None) -> str:
    parts = [(label, f"{_number(cost['breakdown'][key])} yuan") for key, label in COST_PARTS.items()]
    parts.append(("Total", f"{_number(cost['per_account_year_cny'])} yuan"))
    parts.append(("Published reference (a distributed core bank)", f"{_number(cost['reference_cny'])} yuan"))
    derived = [
        (label, f"{_number(cost['derived'][key], 3)} {unit}") for key, (label, unit) in DERIVED.items()
    ]
    assumptions = [
        (label, f"{_number(cost['assumptions'][key], 3)} {unit}")
        for key, (label, unit) in ASSUMPTIONS.items()
    ]
    image = f'<p><img src="{_esc(chart)}" alt="cost per account-year by part"></p>' if chart else ""
    left_out = "".join(f"<li>{_esc(item)}</li>" for item in LEFT_OUT)
    return (
        "<h2>Cost per account per year</h2><p>Measured on this run (CPU seconds, memory and disk of"
        " every cluster process, per account and per money movement), projected to the bank below.</p>"
        f"{_table(parts, numeric=True)}{image}<h3>What it takes</h3>{_table(derived, numeric=True)}"
        f"<h3>Assumptions</h3><p>Each can be changed: <code>bankctl demo --help</code>.</p>"
        f"{_table(assumptions, numeric=True)}<h3>What the model leaves out</h3><ul>{left_out}</ul>"
    )


def _phases(phases_ms: dict[str, float]) -> str:
    return ", ".join(f"{phase.replace('_', ' ')} {ms:.0f}" for phase, ms in phases_ms.items())


def scale_out_section(grown: dict[str, Any] | None, rows: list[tuple[str, str]]) -> str:
    """Growing the bank: its figures, each batch of slots moved, and the slots per shard plot."""
    if not grown:
        return ""
    head = "<tr><th>slots</th><th>from</th><th>to</th><th>started (s)</th><th>rows copied</th>"
    head += "<th>writes frozen (ms)</th><th>where the freeze went (ms)</th></tr>"
    batches = "".join(
        f"<tr><td>{m['slots'][0]}-{m['slots'][1]}</td><td>shard {m['from']}</td><td>shard {m['to']}</td>"
        f'<td class="n">{m["started_t"]}</td><td class="n">{_number(m["copied_rows"] or 0)}</td>'
        f'<td class="n">{m["freeze_ms"]}</td>'
        f"<td>{_esc(_phases(m['freeze_phases_ms']))}</td></tr>"
        for m in grown["moves"]
    )
    image = '<p><img src="slots.png" alt="slots per shard over time"></p>' if grown["moves"] else ""
    return (
        "<h2>Growing the bank</h2><p>A shard added while the load ran, then the slots rebalanced onto it"
        " batch by batch: each batch copied while writes went on, its writes frozen only for the final"
        f" pass, the hand-over and the flip.</p>{_table(rows)}<table>{head}{batches}</table>{image}"
    )


def page(
    data: dict[str, Any], summary: list[tuple[str, str]], plots: list[str], cost_chart: str | None,
    grown: str = "",
) -> str:  # fmt: skip
    ok, lines = verdict(data)
    verdict_html = "".join(f"<li>{_esc(line)}</li>" for line in lines)
    kind, word = ("pass", "PASS") if ok else ("fail", "FAIL")
    figures = "".join(f'<p><img src="{_esc(name)}" alt="{_esc(name)}"></p>' for name in plots)
    marks = "; ".join(f"{m['label']} at {m['t']:.0f} s" for m in data["fault_marks"]) or "none"
    title = f"bank-sim {_esc(data['scenario'])} run {_esc(data['run_id'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body><h1>{title}</h1>
<div class="verdict {kind}"><strong>{word}</strong><ul>{verdict_html}</ul></div>
<h2>Figures</h2>{_table(summary)}
<h2>Over time</h2><p>Faults and their undoing, marked on every plot: {_esc(marks)}.</p>{figures}
{grown}
{cost_section(data["cost"], cost_chart)}
<p>Every figure comes from this run: Locust's CSVs beside this file, the faults as bankctl recorded them,
the ledger audited afterwards; report.json holds them all.</p></body></html>"""
