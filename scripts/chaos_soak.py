"""The long fault run: on a fresh cluster, `bankctl chaos run` for several seeds, one line per
seed, a summary JSON, exit 1 if any seed found an anomaly. Bounded: seeds x minutes.

    .venv/bin/python scripts/chaos_soak.py                 # seeds 1-10, 5 minutes each
    .venv/bin/python scripts/chaos_soak.py --seeds 11-13 --minutes 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BANKCTL = [sys.executable, "-m", "services.cli.main"]


def seeds_of(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="1-10", help="a seed or a range, e.g. 1-10 (default)")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--home", type=Path, default=Path(".bank/soak"))
    parser.add_argument("--out", type=Path, default=Path("reports/chaos"))
    args = parser.parse_args()
    bankctl = [*BANKCTL, "--home", str(args.home)]
    up = subprocess.run([*bankctl, "up", "--name", "soak", "--octet", "90"], check=False)
    if up.returncode != 0:
        return 2
    rows = []
    try:
        for seed in seeds_of(args.seeds):
            started = time.monotonic()
            done = subprocess.run(
                [*bankctl, "chaos", "run", "--seed", str(seed), "--minutes", str(args.minutes), "--json"],
                capture_output=True, text=True, check=False, timeout=args.minutes * 60 + 600,
            )  # fmt: skip
            try:
                verdict = json.loads(done.stdout)
            except ValueError:
                verdict = {
                    "seed": seed,
                    "ok": False,
                    "error": done.stderr[-2000:],
                    "faults": [],
                    "anomalies": [],
                }
            faults = [f["fault"] for f in verdict["faults"] if "error" not in f]
            row = {
                "seed": seed, "ok": verdict["ok"], "seconds": round(time.monotonic() - started),
                "faults": faults, "acked_transfers": verdict.get("acked_transfers"),
                "acked_coalesced": verdict.get("acked_coalesced"),
                "refused": verdict.get("refused_transfers"), "asked_again": verdict.get("resolved_after_run"),
                "checkpoints": len(verdict.get("checkpoints", [])), "anomalies": verdict["anomalies"],
                "verdict_file": verdict.get("verdict_file"), "error": verdict.get("error"),
            }  # fmt: skip
            rows.append(row)
            print(
                f"seed {seed:>3}: {'ok' if row['ok'] else 'ANOMALY'} in {row['seconds']} s; "
                f"{len(faults)} faults ({', '.join(faults)}); {row['acked_transfers']} acknowledged, "
                f"{row['asked_again']} asked again; {row['checkpoints']} checkpoints; "
                f"anomalies {[a['kind'] for a in row['anomalies']]}",
                flush=True,
            )
    finally:
        subprocess.run([*bankctl, "chaos", "heal"], check=False, capture_output=True)
        subprocess.run([*bankctl, "down"], check=False)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    summary.write_text(json.dumps({"minutes": args.minutes, "seeds": rows}, indent=2), encoding="utf-8")
    total_faults = sum(len(r["faults"]) for r in rows)
    total_acked = sum(r["acked_transfers"] or 0 for r in rows)
    bad = [r["seed"] for r in rows if not r["ok"]]
    print(f"{len(rows)} seeds, {total_faults} faults, {total_acked} acknowledged transfers checked; "
          f"seeds with anomalies: {bad or 'none'}; summary: {summary}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
