-- A slot move's hand-over made short: its migration lines are booked ahead, and its changes of
-- state are one statement each (see services/moves/mover.py).
--
-- A move books the migration lines of the rows it copied before it freezes the slots, each
-- side under its own tag (the lines' counterparty, 'shard N, move ID'). Lines whose tag is here
-- and not yet counted are left out of the audit; the hand-over counts them, in the same
-- transaction that lets the slots go (source) or takes them (target). A rolled-back move removes
-- its uncounted lines.
CREATE TABLE move_lines (
    tag      text    PRIMARY KEY,
    counted  boolean NOT NULL DEFAULT false
);

-- slot_change(slots, state, epoch, moved_to, ...lines, tag): unless the first slot is in
-- `new_state` already (a resumed move), books the lines given (SYS:MIGRATION:<currency>, under
-- each line's transfer id, `tag` as counterparty), counts the lines booked ahead under `tag`,
-- then takes slot_state's EXCLUSIVE lock (waiting for the writes past their check) and sets the
-- slots' state. Returns the lines booked now, or -1 when nothing was to do. One round trip, and
-- its own transaction when sent alone.
CREATE FUNCTION slot_change(
    slots integer[], new_state text, new_epoch bigint, new_moved_to integer,
    line_transfers text[], line_currencies text[], line_amounts bigint[], tag text
) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    booked integer := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM slot_state WHERE slot = slots[1] AND state = new_state) THEN
        RETURN -1;
    END IF;
    INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty)
    SELECT t, 'SYS:MIGRATION:' || c, a, c, NULL, tag
    FROM unnest(line_transfers, line_currencies, line_amounts) AS m(t, c, a);
    GET DIAGNOSTICS booked = ROW_COUNT;
    UPDATE move_lines SET counted = true WHERE move_lines.tag = slot_change.tag;
    LOCK TABLE slot_state IN EXCLUSIVE MODE;
    INSERT INTO slot_state (slot, state, epoch, moved_to)
    SELECT s, new_state, new_epoch, new_moved_to FROM unnest(slots) AS s
    ON CONFLICT (slot) DO UPDATE
    SET state = EXCLUDED.state, epoch = EXCLUDED.epoch, moved_to = EXCLUDED.moved_to, changed_at = now();
    RETURN booked;
END $$;
