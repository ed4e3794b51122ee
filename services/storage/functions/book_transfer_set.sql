-- A set of transfers booked by one function in the database (see services/ledger/booking.py).
--
-- book_transfer_set(orders) takes the checked transfers of one set as a JSON array of rows
-- [request_id, fingerprint, transfer_id, from_account, to_account, amount, currency, reference,
-- target_shard (null: the credit is on this shard)], their request ids distinct, and in one
-- round trip: finds the request ids answered already (not booked again), refuses the orders
-- whose slots this shard may not write now (slot_fence), locks the accounts of the others in
-- account-number order and releases their expired holds, applies the rules in the orders' order
-- (each sees the balances the earlier ones left), and writes what the accepted ones write:
-- transfers, postings (dated with the shard's business date, shard_business_date), outbox
-- rows, balances, and their requests' answers. A refused order writes nothing.
--
-- It returns the transaction's time and {"priors": [[request_id, operation, fingerprint,
-- result], ...], "fenced": [[slot, state, moved_to], ...], "refused": [[position, debit,
-- credit], ...], "after": [debit balance after, or null, per order]}: the refused orders with
-- the accounts as the rules saw them ([number, currency, status, balance, held,
-- overdraft_limit], null when missing), from which the node words the refusal with the same
-- rules (services/common/account_rules.py), which it applies to every other kind of movement.
--
-- Every table it reads it reads by an index (requests, accounts, holds and slot_state by their
-- keys). PL/pgSQL caches a generic plan of each statement after five calls; planned while the
-- tables were still small (a new shard's first transfers), a lookup of request ids by a scan of
-- the table stayed that session's plan as the table grew (880 us a set of four after 4,000
-- transfers). Hence enable_seqscan off for its statements.
--
-- Its answers kept short (once migration 0010):
--   The first answer of a transfer request was its whole MoneyMovement as JSON in the requests
--   row (about 450 bytes, its largest write): every field of the transfer again, beside the
--   transfer's own row. Now the row keeps what the transfer's row cannot tell later: which
--   transfer answered (its id, from which the request's slot is computed as before), the status
--   it was answered with (a cross-shard transfer's row moves on from PENDING; a retry gets the
--   first answer) and the debit's balance after it:
--     {"type": "TransferAnswer", "transfer": {"transfer_id", "status"}, "balance_after"}
--   The retry's lookup gives it back whole, from the transfer's row (which lives and moves with
--   the request's slot), exactly as it was written before; answers written before this stay as
--   they are and are given back as they are.
--
-- Less work in the database (once migration 0011): a shard books its sets one after another,
-- so this call's time bounds a shard's batch rate (bench/set_statements.py times it per
-- statement). Three changes from the body before:
-- * the locked accounts are gathered in one pass: their arrays come from the same rows in the
--   same pass, so they agree with each other in any order (the rows are still locked in the
--   accounts' order, by the sorted FOR UPDATE); six sorts a set fewer;
-- * each account's row is remembered by its place (ctid) when it is locked, and its balance
--   written there, instead of being looked up again by its key (a hold's expiry rewrites the
--   row: the places are read again then);
-- * an order's accounts are found among the locked ones by a hash join instead of two merge
--   joins that sorted both sides.
-- A balance not written where its row was locked undoes the whole set (an exception: the node
-- then books its transfers one by one). bench/set_statements.py, 100 sets of 1,000 twice each,
-- median per set: 60.5 and 58.9 ms against 63.8 and 61.2 ms with 0010's body.
--
-- Applied again whenever this file changes (services/storage/migrate.py). CREATE OR REPLACE keeps the
-- signature: a change of its arguments or results needs a DROP FUNCTION first, here.
CREATE OR REPLACE FUNCTION book_transfer_set(orders jsonb, OUT booked_at timestamptz, OUT outcome jsonb)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off AS $$
DECLARE
    today constant date := shard_business_date();  -- every line of the set, one business date
    max_balance constant bigint := 9223372036854775807;
    n integer;
    rids text[]; digests text[]; tids text[]; froms text[]; tos text[]; amounts bigint[];
    currencies text[]; refs text[]; targets integer[];
    fate text[];            -- per order: null (to book), 'prior', 'fenced', 'refused', 'booked'
    priors jsonb; fenced jsonb := '[]'; refused jsonb := '[]';
    shut integer[];
    numbers text[];         -- the locked accounts that exist
    places tid[];           -- where each of them is (its row's ctid)
    statuses text[]; held_currencies text[]; balances bigint[]; helds bigint[]; limits bigint[];
    moves integer[];
    d integer[]; c integer[];  -- per order: its debit's / credit's position in numbers
    debit_after bigint[]; credit_after bigint[];
    x integer; y integer; amt bigint;
BEGIN
    booked_at := now();
    SELECT array_agg(r->>0 ORDER BY i), array_agg(r->>1 ORDER BY i), array_agg(r->>2 ORDER BY i),
           array_agg(r->>3 ORDER BY i), array_agg(r->>4 ORDER BY i), array_agg((r->>5)::bigint ORDER BY i),
           array_agg(r->>6 ORDER BY i), array_agg(r->>7 ORDER BY i), array_agg((r->>8)::integer ORDER BY i)
    INTO rids, digests, tids, froms, tos, amounts, currencies, refs, targets
    FROM jsonb_array_elements(orders) WITH ORDINALITY AS e(r, i);
    n := coalesce(array_length(rids, 1), 0);
    fate := array_fill(NULL::text, ARRAY[n]);
    debit_after := array_fill(NULL::bigint, ARRAY[n]);
    credit_after := array_fill(NULL::bigint, ARRAY[n]);

    -- Retries: the requests answered already (or claimed by this transaction) are not booked.
    -- (an answer kept short is given whole again from its transfer's row)
    SELECT coalesce(jsonb_agg(jsonb_build_array(q.request_id, q.operation, q.fingerprint, CASE
               WHEN q.result ->> 'type' = 'TransferAnswer' AND t.transfer_id IS NOT NULL THEN jsonb_build_object(
                   'type', 'MoneyMovement',
                   'transfer', jsonb_build_object(
                       'type', 'Transfer', 'transfer_id', t.transfer_id, 'request_id', t.request_id,
                       'kind', t.kind, 'from_account', t.from_account, 'to_account', t.to_account,
                       'amount', t.amount, 'currency', t.currency::text,
                       'status', q.result -> 'transfer' -> 'status',
                       'reference', t.reference, 'failure_reason', '', 'hold_id', t.hold_id,
                       'created_at', jsonb_build_object('datetime', to_jsonb(t.created_at))),
                   'balance_after', q.result -> 'balance_after')
               ELSE q.result END)), '[]')
    INTO priors
    FROM requests q
    LEFT JOIN transfers t
        ON q.result ->> 'type' = 'TransferAnswer' AND t.transfer_id = q.result -> 'transfer' ->> 'transfer_id'
    WHERE q.request_id = ANY(rids);
    IF priors <> '[]' THEN
        SELECT array_agg(CASE WHEN q.request_id IS NULL THEN NULL ELSE 'prior' END ORDER BY o.i)
        INTO fate
        FROM unnest(rids) WITH ORDINALITY AS o(rid, i)
        LEFT JOIN requests q ON q.request_id = o.rid;
    END IF;

    -- The slots this shard may not write now.
    IF array_position(fate, NULL) IS NULL THEN  -- nothing left to book
        outcome := jsonb_build_object('priors', priors, 'fenced', fenced, 'refused', refused,
                                      'after', to_jsonb(debit_after));
        RETURN;
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_array(f.slot, f.state, f.moved_to)), '[]'), array_agg(f.slot)
    INTO fenced, shut
    FROM slot_fence(ARRAY(
        SELECT DISTINCT w.s FROM (
            SELECT substr(o.src, 1, 4)::integer FROM unnest(froms, fate) AS o(src, f) WHERE o.f IS NULL
            UNION ALL
            SELECT substr(o.dst, 1, 4)::integer FROM unnest(tos, targets, fate) AS o(dst, t, f)
            WHERE o.f IS NULL AND o.t IS NULL
        ) AS w(s)
    )) AS f;
    IF shut IS NOT NULL THEN
        SELECT array_agg(CASE
                   WHEN o.f IS NOT NULL THEN o.f
                   WHEN substr(o.src, 1, 4)::integer = ANY(shut) THEN 'fenced'
                   WHEN o.t IS NULL AND substr(o.dst, 1, 4)::integer = ANY(shut) THEN 'fenced'
               END ORDER BY o.i)
        INTO fate FROM unnest(froms, tos, targets, fate) WITH ORDINALITY AS o(src, dst, t, f, i);
    END IF;

    -- The accounts, locked in the one order every transaction uses, expired holds released.
    SELECT array_agg(l.account_number), array_agg(l.ctid), array_agg(l.status), array_agg(l.currency),
           array_agg(l.balance), array_agg(l.held), array_agg(l.overdraft_limit)
    INTO numbers, places, statuses, held_currencies, balances, helds, limits
    FROM (
        SELECT a.account_number, a.ctid, a.status, a.currency::text AS currency, a.balance, a.held, a.overdraft_limit
        FROM accounts a
        WHERE a.account_number = ANY(ARRAY(
            SELECT o.src FROM unnest(froms, fate) AS o(src, f) WHERE o.f IS NULL
            UNION
            SELECT o.dst FROM unnest(tos, targets, fate) AS o(dst, t, f) WHERE o.f IS NULL AND o.t IS NULL))
        ORDER BY a.account_number FOR UPDATE
    ) AS l;
    numbers := coalesce(numbers, '{}');
    places := coalesce(places, '{}');
    WITH expired AS (
        UPDATE holds h SET status = 'EXPIRED'
        WHERE h.account_number = ANY(numbers) AND h.status = 'ACTIVE' AND h.expires_at <= now()
        RETURNING h.account_number, h.amount
    )
    UPDATE accounts a SET held = a.held - e.total, version = a.version + 1
    FROM (SELECT ex.account_number, sum(ex.amount)::bigint AS total FROM expired ex GROUP BY ex.account_number) AS e
    WHERE a.account_number = e.account_number;
    GET DIAGNOSTICS x = ROW_COUNT;
    IF x > 0 THEN  -- those rows were written again: their holds and places changed
        SELECT array_agg(a.held ORDER BY u.pos), array_agg(a.ctid ORDER BY u.pos) INTO helds, places
        FROM unnest(numbers) WITH ORDINALITY AS u(num, pos) JOIN accounts a ON a.account_number = u.num;
    END IF;
    moves := array_fill(0, ARRAY[coalesce(array_length(numbers, 1), 0)]);
    SELECT array_agg(hd.pos::integer ORDER BY o.i), array_agg(CASE WHEN o.t IS NULL THEN hc.pos::integer END ORDER BY o.i)
    INTO d, c
    FROM unnest(froms, tos, targets) WITH ORDINALITY AS o(src, dst, t, i)
    LEFT JOIN unnest(numbers) WITH ORDINALITY AS hd(a, pos) ON hd.a = o.src
    LEFT JOIN unnest(numbers) WITH ORDINALITY AS hc(a, pos) ON hc.a = o.dst;

    -- The rules, in the orders' order.
    FOR i IN 1..n LOOP
        CONTINUE WHEN fate[i] IS NOT NULL;
        x := d[i];
        y := c[i];
        amt := amounts[i];
        IF x IS NULL OR (targets[i] IS NULL AND y IS NULL)
           OR statuses[x] <> 'ACTIVE' OR held_currencies[x] <> currencies[i]
           OR (y IS NOT NULL AND (statuses[y] <> 'ACTIVE' OR held_currencies[y] <> currencies[i]))
           OR amt > balances[x] - helds[x] + limits[x]
           OR (y IS NOT NULL AND balances[y] > max_balance - amt) THEN
            fate[i] := 'refused';
            refused := refused || jsonb_build_array(jsonb_build_array(
                i - 1,
                CASE WHEN x IS NOT NULL THEN jsonb_build_array(numbers[x], held_currencies[x], statuses[x],
                                                               balances[x], helds[x], limits[x]) END,
                CASE WHEN y IS NOT NULL THEN jsonb_build_array(numbers[y], held_currencies[y], statuses[y],
                                                               balances[y], helds[y], limits[y]) END));
            CONTINUE;
        END IF;
        balances[x] := balances[x] - amt;
        moves[x] := moves[x] + 1;
        debit_after[i] := balances[x];
        IF y IS NOT NULL THEN
            balances[y] := balances[y] + amt;
            moves[y] := moves[y] + 1;
            credit_after[i] := balances[y];
        END IF;
        fate[i] := 'booked';
    END LOOP;

    -- What the booked ones write, in one statement; their balances after it.
    WITH booked AS (
        SELECT * FROM unnest(tids, rids, digests, froms, tos, amounts, currencies, refs, targets, fate,
                             debit_after, credit_after)
            WITH ORDINALITY AS o(tid, rid, digest, src, dst, amt, cur, ref, t, f, dafter, cafter, i)
        WHERE o.f = 'booked'
    ), written_transfers AS (
        INSERT INTO transfers (transfer_id, request_id, kind, from_account, to_account, amount, currency,
                               status, reference, failure_reason, hold_id, created_at)
        SELECT b.tid, b.rid, 'TRANSFER', b.src, b.dst, b.amt, b.cur,
               CASE WHEN b.t IS NULL THEN 'COMMITTED' ELSE 'PENDING' END, b.ref, '', '', booked_at
        FROM booked b
    ), written_postings AS (
        INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty,
                              business_date)
        SELECT b.tid, l.account, l.amount, b.cur, l.after, l.other, today
        FROM booked b
        CROSS JOIN LATERAL (VALUES
            (1, b.src, -b.amt, b.dafter, b.dst),
            (2, CASE WHEN b.t IS NULL THEN b.dst ELSE 'SYS:TRANSIT:' || b.cur END, b.amt, b.cafter,
                CASE WHEN b.t IS NULL THEN b.src ELSE b.dst END)
        ) AS l(line, account, amount, after, other)
        ORDER BY b.i, l.line
    ), written_outbox AS (
        INSERT INTO outbox (transfer_id, target_shard, from_account, to_account, amount, currency, status)
        SELECT b.tid, b.t, b.src, b.dst, b.amt, b.cur, 'PENDING' FROM booked b WHERE b.t IS NOT NULL
    )
    INSERT INTO requests (request_id, operation, fingerprint, result)
    SELECT b.rid, 'Transfer', b.digest, jsonb_build_object(
        'type', 'TransferAnswer',
        'transfer', jsonb_build_object(
            'transfer_id', b.tid, 'status', CASE WHEN b.t IS NULL THEN 'COMMITTED' ELSE 'PENDING' END),
        'balance_after', b.dafter)
    FROM booked b;
    -- Each balance at the place its row was locked at, one by one: this transaction holds the
    -- row's lock, so nobody else has written it since (and this function read its place again
    -- after writing it itself). A row not found there would be a balance not written: the whole
    -- set is undone instead.
    UPDATE accounts a SET balance = u.balance, version = a.version + u.moved
    FROM unnest(places, balances, moves) AS u(place, balance, moved)
    WHERE u.moved > 0 AND a.ctid = u.place;
    GET DIAGNOSTICS x = ROW_COUNT;
    IF x <> (SELECT count(*) FROM unnest(moves) AS m(moved) WHERE m.moved > 0) THEN
        RAISE EXCEPTION 'book_transfer_set: % of the set''s balances written, % moved', x,
            (SELECT count(*) FROM unnest(moves) AS m(moved) WHERE m.moved > 0);
    END IF;

    outcome := jsonb_build_object('priors', priors, 'fenced', fenced, 'refused', refused,
                                  'after', to_jsonb(debit_after));
END $$;
