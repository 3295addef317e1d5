-- Jobs (PostgreSQL), the twin of migrations/sqlite/0021_jobs.sql: bulk work over users, shared
-- by every worker and instance on the store. A job's items are made with it; an item is offered
-- from its `available_ms` on (pending: when due; leased: when its lease ends), to one claim at a
-- time (claims skip the rows other claims lock). Times of items are Unix milliseconds; the rate
-- budget is a grid of refresh slots `slot_us` microseconds apart, `next_slot_us` the first free.

CREATE TABLE jobs (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    job_key       TEXT,
    state         TEXT    NOT NULL CHECK (state IN ('running', 'finished', 'cancelled')),
    scopes        TEXT    NOT NULL,
    rate_milli    BIGINT,
    slot_us       BIGINT  NOT NULL DEFAULT 0,
    next_slot_us  BIGINT  NOT NULL DEFAULT 0,
    slots_taken   BIGINT  NOT NULL DEFAULT 0,
    lease_secs    BIGINT  NOT NULL,
    min_ttl_secs  BIGINT  NOT NULL,
    max_attempts  BIGINT  NOT NULL,
    total         BIGINT  NOT NULL DEFAULT 0,
    created_by    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    finished_at   BIGINT
);

CREATE UNIQUE INDEX jobs_running_key ON jobs (job_key) WHERE state = 'running';

CREATE TABLE job_items (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        BIGINT  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sub           TEXT COLLATE "C" NOT NULL,
    state         TEXT    NOT NULL
                  CHECK (state IN ('pending', 'leased', 'done', 'failed', 'skipped')),
    available_ms  BIGINT  NOT NULL,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    lease         TEXT,
    owner         TEXT,
    reason        TEXT,
    detail        TEXT,
    settled_at    BIGINT
);

CREATE INDEX job_items_due ON job_items (job_id, available_ms)
    WHERE state IN ('pending', 'leased');
CREATE INDEX job_items_lease ON job_items (lease) WHERE lease IS NOT NULL;
CREATE INDEX job_items_state ON job_items (job_id, state, reason);
CREATE INDEX job_items_settled ON job_items (job_id, settled_at) WHERE settled_at IS NOT NULL;
