-- Several instances on one database (PostgreSQL), the twin of
-- migrations/sqlite/0003_instances.sql: the lease that lets one instance at a time refresh a
-- grant, and the batches that let several sweep processes share one run. Conventions as in
-- 0001: whole Unix seconds, TEXT ids, `sub` (and what is compared with it) COLLATE "C".

-- Who may refresh a grant now. A lease ends at `lease_until` by itself, so a holder that died
-- blocks the others no longer than that. Beside the grant, not in it: taking or giving back a
-- lease never writes the grant's row, so it neither waits for the grant's row lock held by a
-- writer nor moves the grant's version or what it exports. Deleting the grant deletes its lease.
CREATE TABLE refresh_leases (
    sub         TEXT COLLATE "C" NOT NULL PRIMARY KEY
                                 REFERENCES grants (sub) ON DELETE CASCADE,
    owner       TEXT    NOT NULL,
    lease_until BIGINT  NOT NULL
);

-- A slice of a sweep run: the users with after < sub <= last (after NULL: from the first),
-- worked by one process at a time under a lease. A run's batches are cut one after another in
-- sub order, each starting where the one before ended, while the claimer holds the run's row,
-- so they never overlap. `progress`: the batch's users with sub <= progress are done. A
-- released batch's lease ended at 0 (the epoch).
CREATE TABLE sweep_batches (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      BIGINT  NOT NULL REFERENCES sweep_runs (id) ON DELETE CASCADE,
    after       TEXT COLLATE "C",
    last        TEXT COLLATE "C" NOT NULL,
    progress    TEXT COLLATE "C",
    owner       TEXT    NOT NULL,
    lease_until BIGINT  NOT NULL,
    done_at     BIGINT,
    -- the batch's counts by outcome, added to the run's when it is done
    counts      TEXT    NOT NULL DEFAULT '{}'
);

-- Where a run's next batch starts (its largest `last`); no two batches of a run end alike.
CREATE UNIQUE INDEX sweep_batches_last ON sweep_batches (run_id, last);
-- A run's unfinished batches by the end of their lease: what a claim looks at first.
CREATE INDEX sweep_batches_undone ON sweep_batches (run_id, lease_until) WHERE done_at IS NULL;

-- Exports page API keys by id; in byte order, as SQLite orders them, so that both backends
-- cut the same pages.
ALTER TABLE api_keys ALTER COLUMN id SET DATA TYPE TEXT COLLATE "C";
