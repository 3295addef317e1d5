-- Activity (SQLite): how many sign-ins, hand-outs, refreshes and proxied calls happened in
-- each minute, summed across instances, for the admin console's charts. Conventions as in
-- 0001: whole Unix seconds, STRICT tables.

-- One row per minute and series. `minute` is the start of the minute (a multiple of 60).
-- Each instance adds what it counted since its last flush: count and total_ms are summed,
-- max_ms is the largest seen. Durations in milliseconds, 0 for series that are not timed.
-- Counts only: no user, token or path is kept here. Old minutes are pruned by age; the
-- primary key orders rows by minute, which serves both the charts' range reads and pruning.
CREATE TABLE activity (
    minute   INTEGER NOT NULL,
    series   TEXT    NOT NULL,
    count    INTEGER NOT NULL,
    total_ms INTEGER NOT NULL,
    max_ms   INTEGER NOT NULL,
    PRIMARY KEY (minute, series)
) STRICT, WITHOUT ROWID;
