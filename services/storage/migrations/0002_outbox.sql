-- Cross-shard transfers: the source shard books the debit and an outbox row in one transaction;
-- a relay delivers the credit to the target shard (which keeps the transfer under the same id,
-- so a second delivery is recognised) and then marks the row delivered, or refunds the debit
-- when the target refuses the credit for good. Money in flight sits on SYS:TRANSIT:<currency>.

CREATE TABLE outbox (
    transfer_id      text        PRIMARY KEY REFERENCES transfers,
    target_shard     integer     NOT NULL CHECK (target_shard >= 0),
    from_account     text        NOT NULL,
    to_account       text        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount > 0),
    currency         char(3)     NOT NULL,
    status           text        NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'REFUNDED')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'PENDING';
