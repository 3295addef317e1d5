-- Activity (PostgreSQL), the twin of migrations/sqlite/0004_activity.sql: how many sign-ins,
-- hand-outs, refreshes and proxied calls happened in each minute, summed across instances,
-- for the admin console's charts. Conventions as in 0001: whole Unix seconds; `series`
-- COLLATE "C" so that rows come back in the order SQLite gives them.

-- One row per minute and series. `minute` is the start of the minute (a multiple of 60).
-- Each instance adds what it counted since its last flush: count and total_ms are summed,
-- max_ms is the largest seen. Durations in milliseconds, 0 for series that are not timed.
-- Counts only: no user, token or path is kept here. Old minutes are pruned by age; the
-- primary key orders rows by minute, which serves both the charts' range reads and pruning.
CREATE TABLE activity (
    minute   BIGINT NOT NULL,
    series   TEXT COLLATE "C" NOT NULL,
    count    BIGINT NOT NULL,
    total_ms BIGINT NOT NULL,
    max_ms   BIGINT NOT NULL,
    PRIMARY KEY (minute, series)
);
