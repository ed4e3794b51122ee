-- Slots on their way between shards (see services/storage/slots.py).
--
-- A shard writes a slot's rows only while its row here says OWNED. A move freezes the slot on
-- its source (FROZEN: writes refused, to be retried), copies it to the target (INCOMING there),
-- hands it over (GONE on the source, naming the new owner; OWNED on the target) and flips the
-- slot map in ZooKeeper. Every write reads the states of its slots in its own transaction, after
-- taking this table's ROW SHARE lock (functions/slot_fence.sql); a change of state takes the EXCLUSIVE lock, so it waits for
-- the writes already past their check and the writes after it see the new state. No slot is
-- ever writable on two shards.
CREATE TABLE slot_state (
    slot        integer     PRIMARY KEY CHECK (slot >= 0),
    state       text        NOT NULL CHECK (state IN ('OWNED', 'FROZEN', 'INCOMING', 'GONE')),
    epoch       bigint      NOT NULL DEFAULT 1,
    moved_to    integer,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- The slot a request was routed by (the account, customer, transfer or hold it names), read
-- from its answer: a slot's answered requests move with it, so that a retry after the move
-- gets its first answer on the new shard.
ALTER TABLE requests ADD COLUMN slot integer GENERATED ALWAYS AS (
    substr(coalesce(
        result -> 'transfer' ->> 'transfer_id',
        result -> 'hold' ->> 'hold_id',
        result ->> 'hold_id',
        'A' || (result ->> 'account_number')
    ), 2, 4)::integer
) STORED;
CREATE INDEX requests_by_slot ON requests (slot, created_at);
