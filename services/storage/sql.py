"""Every SQL statement the ledger runs on a shard's PostgreSQL, as constants to read top to bottom.

Parameters are always passed separately (`%s`); lists of values travel as JSON arrays where a
statement takes many (see SQL_BOOK)."""

ACCOUNT_COLUMNS = (
    "account_number, customer_id, currency, status, balance, held, overdraft_limit, version, slot, opened_at"
)
TRANSFER_COLUMNS = (
    "transfer_id, request_id, kind, from_account, to_account, amount, currency, status,"
    " reference, failure_reason, hold_id, created_at"
)
HOLD_COLUMNS = (
    "hold_id, account_number, to_account, amount, captured_amount, currency, status, expires_at, transfer_id"
)
# A hold past its expiry reads as EXPIRED even before the sweeper has released it.
HOLD_VIEW = (
    "hold_id, account_number, to_account, amount, captured_amount, currency,"
    " CASE WHEN status = 'ACTIVE' AND expires_at <= now() THEN 'EXPIRED' ELSE status END"
    " AS status, expires_at, transfer_id"
)

SQL_CLAIM_REQUEST = """
INSERT INTO requests (request_id, operation, fingerprint, result)
VALUES (%s, %s, %s, '{}'::jsonb)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id
"""
SQL_PRIOR_REQUEST = "SELECT operation, fingerprint, result FROM requests WHERE request_id = %s"
SQL_SAVE_RESULT = "UPDATE requests SET result = %s WHERE request_id = %s"
# The next serials of slots' account numbers: per slot, the last of `count` new ones (they are
# last - count + 1 .. last); the counter's row moves with its slot.
SQL_RESERVE_SERIALS = """
INSERT INTO slot_serials (slot, last_serial)
SELECT * FROM unnest(%s::integer[], %s::bigint[])
ON CONFLICT (slot) DO UPDATE SET last_serial = slot_serials.last_serial + EXCLUDED.last_serial
RETURNING slot, last_serial
"""
SQL_INSERT_ACCOUNT = f"""
INSERT INTO accounts (account_number, slot, customer_id, currency, status, overdraft_limit)
VALUES (%s, %s, %s, %s, 'ACTIVE', %s)
RETURNING {ACCOUNT_COLUMNS}
"""
# Lists of account numbers travel as JSON arrays too (see SQL_BOOK).
ANY_OF_JSON = "ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))"
SQL_LOCK_ROWS = f"""
SELECT account_number FROM accounts WHERE account_number = {ANY_OF_JSON} ORDER BY account_number FOR UPDATE
"""
SQL_LOCK_ACCOUNTS = f"""
SELECT {ACCOUNT_COLUMNS} FROM accounts
WHERE account_number = {ANY_OF_JSON}
ORDER BY account_number
FOR UPDATE
"""
SQL_EXPIRE_HOLDS = f"""
UPDATE holds SET status = 'EXPIRED'
WHERE account_number = {ANY_OF_JSON} AND status = 'ACTIVE' AND expires_at <= now()
RETURNING account_number, amount
"""
SQL_RELEASE_HELD = f"""
UPDATE accounts SET held = held - %s, version = version + 1
WHERE account_number = %s
RETURNING {ACCOUNT_COLUMNS}
"""
SQL_UPDATE_MONEY = f"""
UPDATE accounts SET balance = %s, held = %s, version = version + 1
WHERE account_number = %s
RETURNING {ACCOUNT_COLUMNS}
"""
SQL_UPDATE_STATUS = f"""
UPDATE accounts SET status = %s, version = version + 1
WHERE account_number = %s
RETURNING {ACCOUNT_COLUMNS}
"""
SQL_INSERT_TRANSFER = f"""
INSERT INTO transfers (transfer_id, request_id, kind, from_account, to_account, amount,
                       currency, status, reference, failure_reason, hold_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING {TRANSFER_COLUMNS}
"""
SQL_INSERT_POSTING = """
INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty,
                      business_date)
VALUES (%s, %s, %s, %s, %s, %s, shard_business_date())
"""
SQL_INSERT_HOLD = f"""
INSERT INTO holds (hold_id, account_number, to_account, amount, currency, status, expires_at)
VALUES (%s, %s, %s, %s, %s, 'ACTIVE', now() + make_interval(secs => %s))
RETURNING {HOLD_COLUMNS}
"""
SQL_FIND_HOLD = f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = %s"
SQL_LOCK_HOLD = f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = %s FOR UPDATE"
SQL_FINISH_HOLD = f"""
UPDATE holds SET status = %s, captured_amount = %s, transfer_id = %s
WHERE hold_id = %s
RETURNING {HOLD_COLUMNS}
"""
SQL_GET_ACCOUNT = """
SELECT account_number, customer_id, currency, status, balance,
       held - COALESCE((SELECT sum(h.amount) FROM holds h
                        WHERE h.account_number = a.account_number
                          AND h.status = 'ACTIVE' AND h.expires_at <= now()), 0)::bigint AS held,
       overdraft_limit, version, slot, opened_at
FROM accounts a WHERE account_number = %s
"""
# The accounts among many numbers that exist (what a cross-shard target check reads).
SQL_GET_ACCOUNTS = SQL_GET_ACCOUNT.replace("account_number = %s", "account_number = ANY(%s)")
# The request ids among many that this shard already answered (their retries need no new check).
SQL_KNOWN_REQUESTS = "SELECT request_id FROM requests WHERE request_id = ANY(%s)"
SQL_GET_TRANSFER = f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = %s"
SQL_GET_HOLD = f"SELECT {HOLD_VIEW} FROM holds WHERE hold_id = %s"
SQL_LIST_POSTINGS = """
SELECT p.sequence, p.transfer_id, t.kind, p.amount, p.currency, p.balance_after,
       p.counterparty, p.posted_at, p.business_date
FROM postings p JOIN transfers t USING (transfer_id)
WHERE p.account_number = %s AND p.sequence > %s
ORDER BY p.sequence
LIMIT %s
"""
SQL_INSERT_OUTBOX = """
INSERT INTO outbox (transfer_id, target_shard, from_account, to_account, amount, currency, status)
VALUES (%s, %s, %s, %s, %s, %s, 'PENDING')
"""
# Only the deliveries of slots this shard owns: a moving slot's are frozen with it, a moved
# slot's belong to its new shard.
SQL_DUE_DELIVERIES = """
SELECT o.transfer_id, o.target_shard, o.from_account, o.to_account, o.amount, o.currency, o.attempts
FROM outbox o JOIN slot_state s ON s.slot = substr(o.transfer_id, 2, 4)::integer AND s.state = 'OWNED'
WHERE o.status = 'PENDING' AND o.next_attempt_at <= now()
ORDER BY o.next_attempt_at LIMIT %s
"""
SQL_LOCK_DELIVERY = """
SELECT transfer_id, target_shard, from_account, to_account, amount, currency, attempts
FROM outbox WHERE transfer_id = %s AND status = 'PENDING' FOR UPDATE
"""
SQL_FINISH_DELIVERY = """
UPDATE outbox SET status = %s, finished_at = now(), last_error = %s, attempts = attempts + 1
WHERE transfer_id = %s
"""
SQL_POSTPONE_DELIVERY = """
UPDATE outbox SET attempts = attempts + 1, last_error = %s,
       next_attempt_at = now() + make_interval(secs => %s)
WHERE transfer_id = %s AND status = 'PENDING'
"""
# A credit whose debit is on the same shard (a slot moved after the debit): still owed, or paid.
# (`LIKE 'SYS:%%'` as written in the predicate of the index it reads, migration 0009.)
SQL_TRANSIT_PAID = """
SELECT transfer_id FROM postings
WHERE transfer_id = ANY(%s) AND account_number LIKE 'SYS:%%' AND account_number LIKE 'SYS:TRANSIT:%%'
  AND amount < 0
"""
SQL_KNOWN_TRANSFERS = f"""
SELECT transfer_id, status, failure_reason FROM transfers WHERE transfer_id = {ANY_OF_JSON}
"""
# Delivered credits, many at once: only rows still pending (a refund may have come first).
SQL_FINISH_DELIVERED = f"""
WITH done AS (
    UPDATE outbox SET status = 'DELIVERED', finished_at = now(), last_error = '', attempts = attempts + 1
    WHERE transfer_id = {ANY_OF_JSON} AND status = 'PENDING'
    RETURNING transfer_id
)
UPDATE transfers SET status = 'COMMITTED', failure_reason = ''
WHERE transfer_id = ANY(ARRAY(SELECT transfer_id FROM done))
"""
SQL_SET_TRANSFER_STATUS = f"""
UPDATE transfers SET status = %s, failure_reason = %s WHERE transfer_id = %s
RETURNING {TRANSFER_COLUMNS}
"""
# Set-based booking of cross-shard credits (`LedgerTx.book`; transfers are booked by
# book_transfer_set, functions/book_transfer_set.sql): one statement for a whole group. The rows
# travel as one JSON array per table: psycopg adapts Python lists to PostgreSQL arrays element by
# element in Python, which cost the node half its time on a batch of 1,000; JSON text is cheap
# (orjson). (jsonb, not json: json is parsed again at every `->>`.)
# The update names its rows twice: joined with a JSON array alone, the planner expects 100 rows
# from it and scans the whole accounts table (2 ms per statement at 10,000 accounts).
SQL_BOOK = """
WITH t AS (
    INSERT INTO transfers (transfer_id, request_id, kind, from_account, to_account, amount,
                           currency, status, reference, failure_reason, hold_id)
    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, (r->>5)::bigint, r->>6, r->>7, r->>8, r->>9, r->>10
    FROM jsonb_array_elements(%(transfers)s::jsonb) AS r
), p AS (
    INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty,
                          business_date)
    SELECT r->>0, r->>1, (r->>2)::bigint, r->>3, (r->>4)::bigint, r->>5, (SELECT shard_business_date())
    FROM jsonb_array_elements(%(postings)s::jsonb) AS r
), o AS (
    INSERT INTO outbox (transfer_id, target_shard, from_account, to_account, amount, currency, status)
    SELECT r->>0, (r->>1)::int, r->>2, r->>3, (r->>4)::bigint, r->>5, 'PENDING'
    FROM jsonb_array_elements(%(outbox)s::jsonb) AS r
), a AS (
    UPDATE accounts SET balance = (r->>1)::bigint, held = (r->>2)::bigint,
                        version = accounts.version + (r->>3)::bigint
    FROM jsonb_array_elements(%(balances)s::jsonb) AS r
    WHERE accounts.account_number = r->>0
      AND accounts.account_number = ANY(ARRAY(SELECT x->>0 FROM jsonb_array_elements(%(balances)s::jsonb) x))
)
SELECT 1
"""
# A set of transfers booked by the database itself (functions/book_transfer_set.sql); the outcome
# comes back as JSON text, which orjson reads faster than psycopg's jsonb loader.
SQL_BOOK_TRANSFER_SET = "SELECT booked_at, outcome::text FROM book_transfer_set(%s::jsonb)"
SQL_EXPIRED_HOLD_ACCOUNTS = """
SELECT DISTINCT account_number FROM holds
WHERE status = 'ACTIVE' AND expires_at <= now()
LIMIT %s
"""

SQL_OUTBOX_FIGURES = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM outbox WHERE status = 'PENDING'
"""
SQL_REPLICATION_LAG = """
SELECT application_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8,
       coalesce(extract(epoch FROM replay_lag), 0)::float8
FROM pg_stat_replication
"""
SQL_SLOTS_OWNED = "SELECT count(*) FROM slot_state WHERE state = 'OWNED'"
