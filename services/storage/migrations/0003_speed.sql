-- Speed (the set-based booking of services/ledger/booking.py).
--
-- Accounts are updated in place all day: pages kept 20% free let PostgreSQL write the new
-- version of a row on the same page without touching its indexes (a HOT update).
ALTER TABLE accounts SET (fillfactor = 80);

-- Postings and outbox rows are written in the same statement as their transfer, by one piece of
-- code; a foreign key checked row by row cost a third of the time of writing them. Every
-- posting's transfer is verified by the books' audit instead (services/storage/audit.py:
-- SQL_UNBALANCED reports a posting without its transfer as unbalanced).
ALTER TABLE postings DROP CONSTRAINT postings_transfer_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_transfer_id_fkey;
