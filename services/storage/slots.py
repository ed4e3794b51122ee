"""Which slots a shard may write, read and changed in its own database (see migration 0005).

Writers call `unwritable` (through LedgerTx) in the transaction of their write: it takes
slot_state's ROW SHARE lock and reads the states of their slots. A move changes states with
`set_states`, under the EXCLUSIVE lock: it waits for the writes already past their check, and
every write after it sees the new state. So a write either lands before a freeze (and is copied
by the move's catch-up) or is refused, and no slot is writable on two shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from services.common.errors import BankError, NotLeader, SlotMoved, SlotMoving

OWNED, FROZEN, INCOMING, GONE = "OWNED", "FROZEN", "INCOMING", "GONE"

SQL_FENCE = "SELECT slot, state, moved_to FROM slot_fence(%s::integer[])"
SQL_LOCK_EXCLUSIVE = "LOCK TABLE slot_state IN EXCLUSIVE MODE"
SQL_SET_STATES = """
INSERT INTO slot_state (slot, state, epoch, moved_to)
SELECT s, %s, %s, %s FROM unnest(%s::integer[]) AS s
ON CONFLICT (slot) DO UPDATE
SET state = EXCLUDED.state, epoch = EXCLUDED.epoch, moved_to = EXCLUDED.moved_to, changed_at = now()
"""
SQL_DROP_STATES = "DELETE FROM slot_state WHERE slot = ANY(%s::integer[]) AND state = %s"
SQL_STATES = "SELECT slot, state, epoch, moved_to FROM slot_state ORDER BY slot"
SQL_STATE_OF = "SELECT state FROM slot_state WHERE slot = %s"
SQL_IS_EMPTY = "SELECT NOT EXISTS (SELECT 1 FROM slot_state)"
SQL_CHANGE = "SELECT slot_change(%s::integer[], %s, %s, %s, %s::text[], %s::text[], %s::bigint[], %s)"
Lines = Sequence[tuple[str, str, int]]


def unwritable(
    conn: psycopg.Connection[Any], slots: Iterable[int], what: Callable[[int], str]
) -> dict[int, BankError]:
    """The slots among `slots` this shard may not write now, each with the refusal a write of
    it gets (`what(slot)` names the request's object of that slot in the message)."""
    wanted = sorted(set(slots))
    if not wanted:
        return {}
    rows = conn.execute(SQL_FENCE, (wanted,)).fetchall()
    return {int(slot): refusal(int(slot), state, moved_to, what(int(slot))) for slot, state, moved_to in rows}


def refusal(slot: int, state: str | None, moved_to: int | None, what: str) -> BankError:
    if state in (FROZEN, INCOMING):
        return SlotMoving(f"{what}: slot {slot} is moving between shards; retry in a moment")
    if state == GONE:
        return SlotMoved(f"{what}: slot {slot} has moved to shard {moved_to}; re-route and retry")
    return NotLeader(f"{what}: slot {slot} does not belong to this shard")


def set_states(
    conn: psycopg.Connection[Any], slots: list[int], state: str, epoch: int, moved_to: int | None
) -> None:
    """Changes the slots' state in the caller's transaction, after every write already past its
    check has finished (the EXCLUSIVE lock waits for them); commit to make it count."""
    conn.execute(SQL_LOCK_EXCLUSIVE)
    conn.execute(SQL_SET_STATES, (state, epoch, moved_to, sorted(slots)))


def change(
    conn: psycopg.Connection[Any], slots: list[int], state: str, epoch: int, moved_to: int | None,
    lines: Lines = (), tag: str = "",
) -> int:  # fmt: skip
    """A move's change of the slots' state in one statement (migration 0006): the migration
    `lines` (transfer id, currency, signed amount) booked and those booked ahead under `tag`
    counted, then the state set, unless the slots are in `state` already. Its own transaction on
    an autocommit connection. Returns the lines booked, or -1 when the slots were in `state`."""
    row = conn.execute(
        SQL_CHANGE,
        (
            sorted(slots), state, epoch, moved_to,
            [t for t, _, _ in lines], [c for _, c, _ in lines], [a for _, _, a in lines], tag,
        ),
    ).fetchone()  # fmt: skip
    return int(row[0]) if row else -1


def drop_states(conn: psycopg.Connection[Any], slots: list[int], state: str) -> None:
    """Forgets the slots that are in `state` (an INCOMING copy rolled back)."""
    conn.execute(SQL_LOCK_EXCLUSIVE)
    conn.execute(SQL_DROP_STATES, (sorted(slots), state))


def states(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, int, int | None]]:
    """slot -> (state, epoch, moved_to) of every slot this shard knows."""
    return {int(s): (str(st), int(e), m) for s, st, e, m in conn.execute(SQL_STATES)}


def state_of(conn: psycopg.Connection[Any], slot: int) -> str | None:
    """The slot's state on this shard, or None if it does not know the slot."""
    row = conn.execute(SQL_STATE_OF, (slot,)).fetchone()
    return str(row[0]) if row else None


def bootstrap(conninfo: str, owned: list[int]) -> bool:
    """A shard that has never recorded its slots takes those the slot map gives it (its first
    start after `up`, or after the migration that brought slot_state); True if it did."""
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute(SQL_LOCK_EXCLUSIVE)
        row = conn.execute(SQL_IS_EMPTY).fetchone()
        if not (row and row[0]) or not owned:
            return False
        conn.execute(SQL_SET_STATES, (OWNED, 1, None, sorted(owned)))
        return True
