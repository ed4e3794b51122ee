-- cut_business_date(new_date): moves the shard to `new_date` (never back) under shard_day's
-- EXCLUSIVE lock, which waits for every transaction that read the date before (they hold its
-- ROW SHARE lock until they end) and makes every later one read the new date. Returns the date
-- the shard was on. The caller bounds the wait with lock_timeout: a writer waits behind a cut
-- only while the cut waits for its lock. Applied again whenever this file changes.
CREATE OR REPLACE FUNCTION cut_business_date(new_date date) RETURNS date
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    was date;
BEGIN
    LOCK TABLE shard_day IN EXCLUSIVE MODE;
    SELECT business_date INTO STRICT was FROM shard_day;
    IF new_date > was THEN
        UPDATE shard_day SET business_date = new_date, cut_at = now();
    END IF;
    RETURN was;
END $$;
