-- slot_fence: a write's check of its slots' states (see migrations/0005_slot_fence.sql for the
-- table and services/storage/slots.py). Applied again whenever this file changes.
--
-- The slots among `slots` this shard may not write now, with their state (none: write away).
-- One round trip: the lock first, then the states read after it (a new snapshot per statement).
CREATE OR REPLACE FUNCTION slot_fence(slots integer[]) RETURNS TABLE (slot integer, state text, moved_to integer)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    LOCK TABLE slot_state IN ROW SHARE MODE;
    RETURN QUERY
        SELECT wanted.slot, st.state, st.moved_to
        FROM unnest(slots) AS wanted(slot) LEFT JOIN slot_state st ON st.slot = wanted.slot
        WHERE st.state IS DISTINCT FROM 'OWNED';
END $$;
