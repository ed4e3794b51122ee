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
