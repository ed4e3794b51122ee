"""Where the time of booking a set goes inside PostgreSQL: `book_transfer_set()` (the current
migrations) on a lone PostgreSQL started here, sets of random transfers between its accounts,
and the time of each statement of the function (auto_explain's nested statements).

    .venv/bin/python bench/set_statements.py [--sets 20] [--size 1000] [--accounts 10000]
    .venv/bin/python bench/set_statements.py --against variant.sql [...] [--sets 30]

A node books a batch's part (or a group commit's singles) in one call of the function, and a
shard's sets are booked one after another: this call's time bounds a shard's batch rate. Prints
the call's wall time per set (median, without auto_explain), then, with auto_explain on, each
statement's median milliseconds per set, by the line of the function it is at. No replication:
a cluster's standbys and its other processes share the cores with this on a real shard.

`--against FILE`: each file defines a variant of the function (`CREATE OR REPLACE FUNCTION
book_transfer_set(...)`, say the current one with a statement changed or taken out, after any
DDL it needs); it is installed under a name of its own, and sets are booked by the current
function and each variant in turn, five at a time, on the same tables: prints each one's median
per set and its ratio to the current function's. A variant that leaves something out is not a
ledger; it tells how much that part costs.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psycopg
from psycopg import sql

from bankclient import new_request_id
from services.common.identifiers import new_transfer_id
from services.host.postgres import PostgresInstance
from services.host.processes import free_port
from services.host.service_user import data_root, remove_data_root
from services.storage.migrate import apply_migrations

HOST = "127.0.0.1"
SLOTS = 100
# A statement run by a PL/pgSQL function, as auto_explain logs it: its duration, then (in the
# CONTEXT of the same entry) the innermost function and line that ran it.
DURATION = re.compile(r"duration: ([0-9.]+) ms")
CALLER = re.compile(r"PL/pgSQL function (\w+)\([^)]*\) line (\d+)")


def orders(rng: random.Random, accounts: list[str], size: int) -> str:
    """A set as the node sends it (services/ledger/booking.py: _row)."""
    rows = []
    for _ in range(size):
        source, target = rng.sample(accounts, 2)
        rows.append(
            [
                f"bench-{new_request_id()}",
                "d" * 64,
                new_transfer_id(int(source[:4])),
                source,
                target,
                rng.randint(1, 100),
                "CNY",
                "",
                None,
            ]
        )
    return json.dumps(rows)


def open_accounts(conn: psycopg.Connection, count: int) -> list[str]:
    conn.execute(
        "INSERT INTO slot_state (slot, state) SELECT s, 'OWNED' FROM generate_series(0, %s) s", (SLOTS - 1,)
    )
    conn.execute(
        "INSERT INTO accounts (account_number, slot, customer_id, currency, status, balance)"
        " SELECT lpad((i %% %s)::text, 4, '0') || lpad(i::text, 12, '0'), i %% %s, 'c' || i, 'CNY', 'ACTIVE',"
        " 10000000000 FROM generate_series(1, %s) i",
        (SLOTS, SLOTS, count),
    )
    conn.execute("VACUUM ANALYZE")
    return [str(row[0]) for row in conn.execute("SELECT account_number FROM accounts")]


FUNCTION = "book_transfer_set"
ROUND = 5  # sets booked by one function before the next one's turn (--against)


def book(
    conn: psycopg.Connection, sets: int, size: int, rng: random.Random, accounts: list[str],
    function: str = FUNCTION,
) -> list[float]:  # fmt: skip
    times = []
    call = sql.SQL("SELECT * FROM {}(%s::jsonb)").format(sql.Identifier(function))
    for _ in range(sets):
        payload = orders(rng, accounts, size)
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(call, (payload,)).fetchone()
        times.append(1000 * (time.perf_counter() - started))
    return times


def statements(log_text: str, sets: int) -> dict[int, float]:
    """Each line's median time per set (a line may run more than once a set)."""
    per_line: dict[int, list[float]] = defaultdict(list)
    for entry in log_text.split(" LOG:  ")[1:]:
        duration, caller = DURATION.match(entry), CALLER.search(entry)
        if duration and caller and caller.group(1) == "book_transfer_set":
            per_line[int(caller.group(2))].append(float(duration.group(1)))
    return {line: statistics.median(found) * len(found) / sets for line, found in sorted(per_line.items())}


def variants(paths: list[Path]) -> dict[str, str]:
    """Function name -> the SQL that installs it under that name, per file."""
    found: dict[str, str] = {}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if f"FUNCTION {FUNCTION}(" not in text:
            raise SystemExit(f"{path}: no `FUNCTION {FUNCTION}(` to install as a variant")
        name = f"{FUNCTION}_" + re.sub(r"[^a-z0-9_]", "_", path.stem.lower())
        found[name] = text.replace(f"FUNCTION {FUNCTION}(", f"FUNCTION {name}(")
    return found


def compare(
    conn: psycopg.Connection, others: dict[str, str], args: argparse.Namespace, rng: random.Random,
    accounts: list[str],
) -> None:  # fmt: skip
    """The current function and each variant, ROUND sets each in turn, about `args.sets` each."""
    for text in others.values():
        conn.execute(text.encode())
    names = [FUNCTION, *others]
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        book(conn, 2, args.size, rng, accounts, name)  # warm: each one's plans cached
    for _ in range(max(1, args.sets // ROUND)):
        for name in names:
            times[name] += book(conn, ROUND, args.size, rng, accounts, name)
    base = statistics.median(times[FUNCTION])
    print(f"{args.size} transfers a set, {len(times[FUNCTION])} sets each, alternated {ROUND} at a time:")
    for name in names:
        median = statistics.median(times[name])
        print(f"  {name:<40} median {median:6.1f} ms a set  {median / base:.3f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--against", type=Path, nargs="+", default=[], metavar="FILE")
    args = parser.parse_args()
    args.variants = variants(args.against)  # checked before PostgreSQL starts
    with tempfile.TemporaryDirectory(prefix="bank-set-statements-") as home:
        return measure(args, Path(home))


def measure(args: argparse.Namespace, home: Path) -> int:
    pg = PostgresInstance(
        "sets", data_root(home, "pg") / "sets", HOST, free_port(HOST), secrets.token_hex(16),
        settings={"shared_preload_libraries": "'auto_explain'"},
    )  # fmt: skip
    pg.init()
    try:
        apply_migrations(pg.conninfo(), 0)
        rng = random.Random(1)
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            accounts = open_accounts(conn, args.accounts)
            if args.variants:
                compare(conn, args.variants, args, rng, accounts)
                return 0
            book(conn, 3, args.size, rng, accounts)  # warm: plans cached, pages read
            wall = book(conn, args.sets, args.size, rng, accounts)
            print(f"book_transfer_set, {args.size} transfers a set: median {statistics.median(wall):.1f} ms"
                  f" (min {min(wall):.1f}, max {max(wall):.1f}) over {args.sets} sets")  # fmt: skip
            start = pg.log_file.stat().st_size
            conn.execute("SET auto_explain.log_min_duration = 0")
            conn.execute("SET auto_explain.log_analyze = on")
            conn.execute("SET auto_explain.log_nested_statements = on")
            book(conn, args.sets, args.size, rng, accounts)
        with pg.log_file.open(encoding="utf-8", errors="replace") as log:
            log.seek(start)
            found = statements(log.read(), args.sets)
        print("with auto_explain (its own cost included), ms a set by the function's line:")
        for line, ms in found.items():
            print(f"  line {line:>4}: {ms:7.2f}")
        return 0
    finally:
        pg.stop()
        remove_data_root(home, "pg")


if __name__ == "__main__":
    sys.exit(main())
