-- The ledger of one shard: accounts, transfers, double-entry postings, holds and the
-- idempotency record of every acknowledged mutating request.

CREATE TABLE shard_info (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_id   integer NOT NULL CHECK (shard_id >= 0),
    epoch      bigint  NOT NULL DEFAULT 0
);

-- Serials of account numbers; a slot lives on one shard, so (slot, serial) is unique in the bank.
CREATE SEQUENCE account_serial START 1 MAXVALUE 99999999999;

CREATE TABLE accounts (
    account_number   text        PRIMARY KEY CHECK (account_number ~ '^[0-9]{16}$'),
    slot             integer     NOT NULL CHECK (slot >= 0),
    customer_id      text        NOT NULL,
    currency         char(3)     NOT NULL,
    status           text        NOT NULL CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    balance          bigint      NOT NULL DEFAULT 0,
    held             bigint      NOT NULL DEFAULT 0 CHECK (held >= 0),
    overdraft_limit  bigint      NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    version          bigint      NOT NULL DEFAULT 1,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    -- The last line of defence of "no balance below zero (but for an overdraft limit)".
    CONSTRAINT accounts_available_not_below_limit CHECK (balance - held >= -overdraft_limit)
);
CREATE INDEX accounts_customer ON accounts (customer_id);

CREATE TABLE transfers (
    transfer_id     text        PRIMARY KEY,
    request_id      text        NOT NULL,
    kind            text        NOT NULL
                    CHECK (kind IN ('DEPOSIT', 'WITHDRAWAL', 'TRANSFER', 'HOLD_CAPTURE')),
    from_account    text        NOT NULL DEFAULT '',
    to_account      text        NOT NULL DEFAULT '',
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    status          text        NOT NULL CHECK (status IN ('COMMITTED', 'PENDING', 'FAILED')),
    reference       text        NOT NULL DEFAULT '',
    failure_reason  text        NOT NULL DEFAULT '',
    hold_id         text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One line per account touched by a transfer; the lines of a transfer sum to zero. System
-- accounts (cash in and out of the bank) are named 'SYS:<purpose>:<currency>' and keep no
-- running balance, so that they never become a hot row.
CREATE TABLE postings (
    sequence        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id     text        NOT NULL REFERENCES transfers,
    account_number  text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount <> 0),
    currency        char(3)     NOT NULL,
    balance_after   bigint,
    counterparty    text        NOT NULL DEFAULT '',
    posted_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((account_number LIKE 'SYS:%') = (balance_after IS NULL))
);
CREATE INDEX postings_account ON postings (account_number, sequence);
CREATE INDEX postings_transfer ON postings (transfer_id);

CREATE TABLE holds (
    hold_id          text        PRIMARY KEY,
    account_number   text        NOT NULL REFERENCES accounts,
    to_account       text        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount > 0),
    captured_amount  bigint      NOT NULL DEFAULT 0 CHECK (captured_amount >= 0),
    currency         char(3)     NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('ACTIVE', 'CAPTURED', 'VOIDED', 'EXPIRED')),
    expires_at       timestamptz NOT NULL,
    transfer_id      text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (captured_amount <= amount)
);
CREATE INDEX holds_active_by_account ON holds (account_number) WHERE status = 'ACTIVE';
CREATE INDEX holds_active_by_expiry ON holds (expires_at) WHERE status = 'ACTIVE';

-- The first result of every acknowledged mutating request, keyed by the client's request id.
CREATE TABLE requests (
    request_id   text        PRIMARY KEY,
    operation    text        NOT NULL,
    fingerprint  text        NOT NULL,
    result       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
