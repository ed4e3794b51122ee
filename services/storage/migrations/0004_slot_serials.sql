-- Serials of account numbers per slot, not per shard. A slot's accounts and its counter move
-- together when the slot moves to another shard, so (slot, serial), and so the account number,
-- stays unique in the bank wherever a slot lives, on shards added later too.
CREATE TABLE slot_serials (
    slot         integer PRIMARY KEY CHECK (slot >= 0),
    last_serial  bigint  NOT NULL CHECK (last_serial BETWEEN 0 AND 99999999999)
);

-- Accounts opened before this migration took their serials from the shard's sequence: each
-- slot's counter continues after the highest serial it holds.
INSERT INTO slot_serials (slot, last_serial)
SELECT slot, max(substr(account_number, 5, 11)::bigint) FROM accounts GROUP BY slot;

DROP SEQUENCE account_serial;
