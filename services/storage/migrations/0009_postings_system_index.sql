-- Two index entries fewer per transfer within a shard: postings are indexed by transfer only
-- where a posting is looked up by its transfer at run time, the system accounts' lines (a
-- cross-shard credit's transit line, which the relay reads by transfer id: SQL_TRANSIT_PAID;
-- cash and migration lines). A customer's lines are read by their account (postings_account:
-- statements, slot moves, the audits, which reach a transfer's lines through its accounts).
-- WAL of a direct batch transfer before this (bench/pg_split.py): 15.0 records, 6.94 of them
-- b-tree inserts.
CREATE INDEX postings_system_by_transfer ON postings (transfer_id) WHERE account_number LIKE 'SYS:%';
DROP INDEX postings_transfer;
