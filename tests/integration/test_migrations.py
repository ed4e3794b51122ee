"""Schema migrations apply to a shard that already holds data, as on a running cluster."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from services.common.identifiers import make_account_number
from services.host.postgres import PostgresInstance
from services.storage.migrate import apply_functions, apply_migrations, function_files, migration_files
from services.storage.sql import SQL_TRANSIT_PAID
from tests.integration.conftest import fresh_database


def apply_until(conninfo: str, last: str) -> None:
    """The versioned migrations up to `last`, as an older release of the bank applied them, and
    the functions (a function's body is always its file's)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz DEFAULT now())"
        )
        for name, sql in migration_files():
            if name > last:
                break
            conn.execute(sql.encode("utf-8"))
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
        apply_functions(conn)
        conn.execute("INSERT INTO shard_info (shard_id) VALUES (0)")


def open_slot(conn: psycopg.Connection[Any], slot: int, balances: dict[str, int]) -> None:
    """`slot` owned by the shard, with an active CNY account of each balance in it."""
    conn.execute("INSERT INTO slot_state (slot, state) VALUES (%s, 'OWNED')", (slot,))
    for number, balance in balances.items():
        conn.execute(
            "INSERT INTO accounts (account_number, slot, customer_id, currency, status, balance)"
            " VALUES (%s, %s, 'old', 'CNY', 'ACTIVE', %s)",
            (number, slot, balance),
        )


def book_as_before(
    conn: psycopg.Connection[Any],
    tid: str,
    debit: str,
    credit: str,
    amount: int,
    debit_after: int,
    credit_after: int | None,
) -> None:
    """A transfer's rows as the releases before 0012 wrote them (postings had no business date)."""
    conn.execute(
        "INSERT INTO transfers (transfer_id, request_id, kind, from_account, to_account, amount, currency,"
        " status) VALUES (%s, %s, 'TRANSFER', %s, %s, %s, 'CNY', %s)",
        (tid, f"rid-{tid}", debit, credit, amount, "COMMITTED" if credit_after is not None else "PENDING"),
    )
    conn.execute(
        "INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty)"
        " VALUES (%s, %s, %s, 'CNY', %s, %s), (%s, %s, %s, 'CNY', %s, %s)",
        (tid, debit, -amount, debit_after, credit, tid, credit, amount, credit_after, debit),
    )
    conn.execute("UPDATE accounts SET balance = %s WHERE account_number = %s", (debit_after, debit))
    if credit_after is not None:
        conn.execute("UPDATE accounts SET balance = %s WHERE account_number = %s", (credit_after, credit))


def test_slot_serials_continue_after_the_serials_a_shard_handed_out_before(
    postgres: PostgresInstance,
) -> None:
    conninfo = fresh_database(postgres, "it_migrate_serials")
    apply_until(conninfo, "0003_speed.sql")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for slot in (5, 5, 9, 5):  # the shard-wide sequence, as before
            serial = conn.execute("SELECT nextval('account_serial')").fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO accounts (account_number, slot, customer_id, currency, status)"
                " VALUES (%s, %s, 'old', 'CNY', 'ACTIVE')",
                (make_account_number(slot, serial), slot),
            )
    assert apply_migrations(conninfo, 0) == [name for name, _ in migration_files() if name > "0003_speed.sql"]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        counters = dict(conn.execute("SELECT slot, last_serial FROM slot_serials").fetchall())
        sequences = conn.execute("SELECT count(*) FROM pg_sequences WHERE sequencename = 'account_serial'")
        assert sequences.fetchone() == (0,)
    assert counters == {5: 4, 9: 3}


def test_postings_keep_their_rows_and_order_with_two_indexes_fewer(postgres: PostgresInstance) -> None:
    """0008 drops the index on the sequence, 0009 indexes by transfer only the system lines: the
    lines booked before keep their order, booking goes on, the relay's lookup of transit lines by
    transfer still reads an index."""
    conninfo = fresh_database(postgres, "it_migrate_postings")
    apply_until(conninfo, "0006_slot_hand_over.sql")
    source, target = make_account_number(3, 1), make_account_number(3, 2)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        open_slot(conn, 3, {source: 100, target: 0})
        # Booked as that release wrote its rows (its functions were of its own schema).
        lines = [(f"T0003old{i}", source, target, 10, 90 - 10 * i, 10 * (i + 1)) for i in range(3)]
        for tid, debit, credit, amount, debit_after, credit_after in lines:
            book_as_before(conn, tid, debit, credit, amount, debit_after, credit_after)
        book_as_before(conn, "T0003oldout", source, "SYS:TRANSIT:CNY", 7, 63, None)
    assert apply_migrations(conninfo, 0)[:2] == ["0008_postings_index.sql", "0009_postings_system_index.sql"]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'postings'")
        }
        assert indexes == {"postings_account", "postings_system_by_transfer"}
        indexed = conn.execute("SELECT count(*) FROM postings WHERE account_number LIKE 'SYS:%%'").fetchone()
        assert indexed == (1,)  # the transit line of the cross-shard transfer
        conn.execute(
            "SELECT book_transfer_set(%s::jsonb)",
            (Jsonb([["new-0", "f", "T0003new0", source, target, 5, "CNY", "", None]]),),
        )
        lines = conn.execute(
            "SELECT transfer_id, balance_after FROM postings WHERE account_number = %s ORDER BY sequence",
            (source,),
        ).fetchall()
        conn.execute(  # the credit delivered on this shard after all (its slot came here)
            "INSERT INTO postings (transfer_id, account_number, amount, currency, business_date) VALUES"
            " ('T0003oldout', 'SYS:TRANSIT:CNY', -7, 'CNY', shard_business_date())"
        )
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            str(r[0]) for r in conn.execute(b"EXPLAIN " + SQL_TRANSIT_PAID.encode(), (["T0003oldout"],))
        )
        paid = conn.execute(SQL_TRANSIT_PAID, (["T0003oldout", "T0003old0"],)).fetchall()
    assert lines == [
        ("T0003old0", 90),
        ("T0003old1", 80),
        ("T0003old2", 70),
        ("T0003oldout", 63),
        ("T0003new0", 58),
    ]
    assert "postings_system_by_transfer" in plan, plan
    assert paid == [("T0003oldout",)]


def test_answers_written_before_0010_are_given_back_as_written_and_later_ones_whole(
    postgres: PostgresInstance,
) -> None:
    """A request answered by a release before 0010 kept its whole MoneyMovement in its row; a
    retry of it still gets that answer as written, a new request's row keeps the short one."""
    conninfo = fresh_database(postgres, "it_migrate_answers")
    apply_migrations(conninfo, 0)  # 0010 was book_transfer_set's alone: the old answer is written below
    source, target = make_account_number(4, 1), make_account_number(4, 2)

    def book(conn: psycopg.Connection[Any], rid: str, tid: str) -> list[Any]:
        order = [rid, "f", tid, source, target, 10, "CNY", "ref", None]
        row = conn.execute("SELECT outcome FROM book_transfer_set(%s::jsonb)", (Jsonb([order]),)).fetchone()
        assert row is not None
        return list(row[0]["priors"])

    with psycopg.connect(conninfo, autocommit=True) as conn:
        open_slot(conn, 4, {source: 100, target: 0})
        assert book(conn, "old", "T0004old") == []
        [(_, _, _, whole)] = book(conn, "old", "T0004old")
        # As the releases before 0010 wrote it: the whole movement (marked, to tell it from one
        # rebuilt from the transfer's row).
        old_answer = {**whole, "transfer": {**whole["transfer"], "reference": "written before 0010"}}
        assert whole["type"] == "MoneyMovement" and whole["transfer"]["reference"] == "ref"
        conn.execute("UPDATE requests SET result = %s WHERE request_id = 'old'", (Jsonb(old_answer),))
        assert book(conn, "old", "T0004old") == [["old", "Transfer", "f", old_answer]]
        assert book(conn, "new", "T0004new") == []
        stored = conn.execute("SELECT result FROM requests WHERE request_id = 'new'").fetchone()
        [(_, _, _, new_answer)] = book(conn, "new", "T0004new")
    short = {"transfer_id": "T0004new", "status": "COMMITTED"}
    assert stored == ({"type": "TransferAnswer", "transfer": short, "balance_after": 80},)
    assert old_answer["balance_after"] == 90 and new_answer["balance_after"] == 80
    same_fields = {"transfer_id", "request_id", "datetime", "balance_after", "reference"}
    assert keys_and_values(new_answer, same_fields) == keys_and_values(old_answer, same_fields)
    assert (
        new_answer["transfer"]["transfer_id"] == "T0004new" and new_answer["transfer"]["request_id"] == "new"
    )


def test_a_fresh_schema_and_an_upgraded_one_define_the_same_functions(postgres: PostgresInstance) -> None:
    """An older release's shard (its versioned migrations to 0006, a function of another body)
    upgraded by the migrator ends with exactly the functions a new shard gets; a function whose
    file did not change is not applied again."""
    fresh = fresh_database(postgres, "it_migrate_fresh")
    upgraded = fresh_database(postgres, "it_migrate_upgraded")
    assert apply_migrations(fresh, 0) == [
        *(name for name, _ in migration_files()),
        *(f"functions/{name}" for name, _ in function_files()),
    ]
    apply_until(upgraded, "0006_slot_hand_over.sql")
    with psycopg.connect(upgraded, autocommit=True) as conn:  # slot_fence as another release had it
        conn.execute(
            "CREATE OR REPLACE FUNCTION slot_fence(slots integer[])"
            " RETURNS TABLE (slot integer, state text, moved_to integer)"
            " LANGUAGE sql AS $$ SELECT NULL::integer, NULL::text, NULL::integer WHERE false $$"
        )
        conn.execute("UPDATE schema_functions SET digest = 'older' WHERE name = 'slot_fence.sql'")
        before = defined_functions(conn)
    later = [name for name, _ in migration_files() if name > "0006_slot_hand_over.sql"]
    assert apply_migrations(upgraded, 0) == [*later, "functions/slot_fence.sql"]
    with psycopg.connect(fresh) as a, psycopg.connect(upgraded) as b:
        assert defined_functions(a) == defined_functions(b)
        assert set(defined_functions(a)) == {name.removesuffix(".sql") for name, _ in function_files()}
        assert before["slot_fence"] != defined_functions(a)["slot_fence"]
    assert apply_migrations(upgraded, 0) == []  # nothing changed: nothing applied


def defined_functions(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """name -> whole definition of every function of the bank's schema."""
    rows = conn.execute(
        "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
    ).fetchall()
    return {str(name): str(body) for name, body in rows}


def keys_and_values(answer: dict[str, Any], but: set[str]) -> dict[str, Any]:
    """The answer's fields, nested ones flattened, with the values of `but` left out."""
    flat: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in keys_and_values(value, but).items()})
        else:
            flat[key] = None if key in but else value
    return flat
