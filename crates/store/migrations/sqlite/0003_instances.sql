-- Several instances on one database (SQLite): the lease that lets one instance at a time
-- refresh a grant, and the batches that let several sweep processes share one run.
-- Conventions as in 0001: whole Unix seconds, TEXT ids, STRICT tables.

-- Who may refresh a grant now. A lease ends at `lease_until` by itself, so a holder that died
-- blocks the others no longer than that. Beside the grant, not in it: taking or giving back a
-- lease never writes the grant's row, so it moves neither its version nor what it exports.
-- Deleting the grant deletes its lease.
CREATE TABLE refresh_leases (
    sub         TEXT    NOT NULL PRIMARY KEY REFERENCES grants (sub) ON DELETE CASCADE,
    owner       TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
) STRICT;

-- A slice of a sweep run: the users with after < sub <= last (after NULL: from the first),
-- worked by one process at a time under a lease. A run's batches are cut one after another in
-- sub order, each starting where the one before ended, so they never overlap. `progress`: the
-- batch's users with sub <= progress are done. A released batch's lease ended at 0 (the epoch).
CREATE TABLE sweep_batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES sweep_runs (id) ON DELETE CASCADE,
    after       TEXT,
    last        TEXT    NOT NULL,
    progress    TEXT,
    owner       TEXT    NOT NULL,
    lease_until INTEGER NOT NULL,
    done_at     INTEGER,
    -- the batch's counts by outcome, added to the run's when it is done
    counts      TEXT    NOT NULL DEFAULT '{}'
) STRICT;

-- Where a run's next batch starts (its largest `last`); no two batches of a run end alike.
CREATE UNIQUE INDEX sweep_batches_last ON sweep_batches (run_id, last);
-- A run's unfinished batches by the end of their lease: what a claim looks at first.
CREATE INDEX sweep_batches_undone ON sweep_batches (run_id, lease_until) WHERE done_at IS NULL;
