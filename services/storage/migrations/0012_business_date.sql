-- Every posting carries the business date it was booked in (services/day/): the shard's date
-- when its transaction read it (functions/shard_business_date.sql), decided in that transaction.
-- The shard moves to the next date under this table's EXCLUSIVE lock (functions/
-- cut_business_date.sql), which waits for the writers that read the date before: no
-- transaction's postings straddle the cut, and once the cut commits, every posting of the day
-- before is committed.
CREATE TABLE shard_day (
    singleton      boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    business_date  date        NOT NULL,
    cut_at         timestamptz NOT NULL DEFAULT now()
);
-- The bank's node sets the date from the bank's own (ZooKeeper) when it leads the shard; until
-- then (a lone shard, as in the tour), the calendar date of the bank's default time zone.
INSERT INTO shard_day (business_date) VALUES ((now() AT TIME ZONE 'Asia/Shanghai')::date);

ALTER TABLE postings ADD COLUMN business_date date;
UPDATE postings SET business_date = (posted_at AT TIME ZONE 'Asia/Shanghai')::date;
ALTER TABLE postings ALTER COLUMN business_date SET NOT NULL;
