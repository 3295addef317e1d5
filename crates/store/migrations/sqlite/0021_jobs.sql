-- Jobs (SQLite), the twin of migrations/postgres/0021_jobs.sql: bulk work over users, shared by
-- every worker and instance on the store. A job's items are made with it; an item is offered
-- from its `available_ms` on (pending: when due; leased: when its lease ends), to one claim at a
-- time. Times of items are Unix milliseconds (leases are seconds long); the rate budget is a
-- grid of refresh slots `slot_us` microseconds apart, `next_slot_us` the first free one.

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    job_key       TEXT,
    state         TEXT    NOT NULL CHECK (state IN ('running', 'finished', 'cancelled')),
    scopes        TEXT    NOT NULL,
    -- Refreshes a second, times 1000; NULL: no limit.
    rate_milli    INTEGER,
    slot_us       INTEGER NOT NULL DEFAULT 0,
    next_slot_us  INTEGER NOT NULL DEFAULT 0,
    -- How many slots the last take got (read back with next_slot_us in one statement).
    slots_taken   INTEGER NOT NULL DEFAULT 0,
    lease_secs    INTEGER NOT NULL,
    min_ttl_secs  INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    total         INTEGER NOT NULL DEFAULT 0,
    created_by    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
) STRICT;

-- One running job per key: the sweeps, keep-alive and each `jobs run` name are joined, not
-- made twice.
CREATE UNIQUE INDEX jobs_running_key ON jobs (job_key) WHERE state = 'running';

CREATE TABLE job_items (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sub           TEXT    NOT NULL,
    state         TEXT    NOT NULL
                  CHECK (state IN ('pending', 'leased', 'done', 'failed', 'skipped')),
    available_ms  INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease         TEXT,
    owner         TEXT,
    reason        TEXT,
    detail        TEXT,
    settled_at    INTEGER
) STRICT;

-- What a claim reads: the open items of a job, earliest due first.
CREATE INDEX job_items_due ON job_items (job_id, available_ms)
    WHERE state IN ('pending', 'leased');
-- What a report checks: the items of one lease.
CREATE INDEX job_items_lease ON job_items (lease) WHERE lease IS NOT NULL;
-- Progress: counts by state and reason, and the last settled.
CREATE INDEX job_items_state ON job_items (job_id, state, reason);
CREATE INDEX job_items_settled ON job_items (job_id, settled_at) WHERE settled_at IS NOT NULL;
