-- One index entry fewer per posting (two per transfer): a posting is read by its account
-- (postings_account: statements, audits, slot moves) or by its transfer (postings_transfer),
-- never by its sequence alone, so the primary key on the sequence only cost an index insert per
-- line, its WAL, and its replay on every standby. The sequence stays unique: it is an identity
-- column, and no statement writes it.
ALTER TABLE postings DROP CONSTRAINT postings_pkey;
