-- shard_business_date(): the business date this transaction books in (see migrations/
-- 0012_business_date.sql). The first call of a transaction takes shard_day's ROW SHARE lock (a
-- cut waits for it) and reads the date; later calls of the same transaction answer the same date
-- from a setting local to the transaction, so a posting's date costs one lookup, not a read.
-- Applied again whenever this file changes.
CREATE OR REPLACE FUNCTION shard_business_date() RETURNS date
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    known text := current_setting('bank.business_date', true);
    today date;
BEGIN
    IF known IS NOT NULL AND known <> '' THEN
        RETURN known::date;
    END IF;
    LOCK TABLE shard_day IN ROW SHARE MODE;
    SELECT business_date INTO STRICT today FROM shard_day;
    PERFORM set_config('bank.business_date', today::text, true);
    RETURN today;
END $$;
