-- slot_change: a slot move's change of state in one statement (see migrations/0006_slot_hand_over.sql
-- for move_lines and services/moves/mover.py). Applied again whenever this file changes.
--
-- slot_change(slots, state, epoch, moved_to, ...lines, tag): unless the first slot is in
-- `new_state` already (a resumed move), books the lines given (SYS:MIGRATION:<currency>, under
-- each line's transfer id, `tag` as counterparty), counts the lines booked ahead under `tag`,
-- then takes slot_state's EXCLUSIVE lock (waiting for the writes past their check) and sets the
-- slots' state. Returns the lines booked now, or -1 when nothing was to do. One round trip, and
-- its own transaction when sent alone.
CREATE OR REPLACE FUNCTION slot_change(
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
    INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty,
                          business_date)
    SELECT t, 'SYS:MIGRATION:' || c, a, c, NULL, tag, shard_business_date()
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
