-- Offline access (PostgreSQL), the twin of migrations/sqlite/0002_offline_access.sql: the API
-- keys of app services, the audit trail, the webhook outbox on grant_events, and the progress
-- of sweep jobs. Conventions as in 0001: whole Unix seconds, TEXT ids, `sub` COLLATE "C".

-- Only a SHA-256 of each key's secret is kept; `id` is public (listings, audit rows).
CREATE TABLE api_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    -- hex SHA-256 of the secret: what a request's key is looked up by
    hash       TEXT    NOT NULL UNIQUE,
    -- capabilities, space-delimited
    scopes     TEXT    NOT NULL DEFAULT '',
    created_at BIGINT  NOT NULL,
    revoked_at BIGINT,
    -- insertion order: breaks ties between keys created in the same second, as SQLite's rowid
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY
);

-- What app services and operators did. History: no foreign key to users, so deleting a user
-- keeps the rows that name them. The identity keeps ids growing even after old rows are
-- pruned, so paging by id never repeats.
CREATE TABLE audit (
    id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    sub     TEXT COLLATE "C",
    action  TEXT    NOT NULL,
    detail  TEXT    NOT NULL,
    outcome TEXT    NOT NULL
);

-- One user's history, newest first; and everything since a time.
CREATE INDEX audit_sub ON audit (sub, id);
CREATE INDEX audit_at ON audit (at);

-- The grant_events table is the webhook's outbox: an event is due at `next_attempt_at` until
-- it is delivered. New events are due at once (next_attempt_at = at). Events recorded before
-- this migration are due too: no webhook has seen them.
ALTER TABLE grant_events
    ADD COLUMN delivered_at    BIGINT,
    ADD COLUMN attempts        BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN next_attempt_at BIGINT;
UPDATE grant_events SET next_attempt_at = at;
ALTER TABLE grant_events ALTER COLUMN next_attempt_at SET NOT NULL;

-- Only undelivered events, by due time: the deliverer's poll reads just what is due, however
-- long the delivered history grows.
CREATE INDEX grant_events_due ON grant_events (next_attempt_at, id) WHERE delivered_at IS NULL;

-- Runs of `sweep` jobs. A run is finished or under way; a job has at most one under way,
-- which an interrupted sweep resumes from its cursor.
CREATE TABLE sweep_runs (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT,
    -- every user with sub <= cursor has been processed (compared as users are paged)
    cursor      TEXT COLLATE "C",
    -- counts by outcome, JSON text the store does not read
    counts      TEXT    NOT NULL DEFAULT '{}'
);

CREATE UNIQUE INDEX sweep_runs_one_unfinished ON sweep_runs (job) WHERE finished_at IS NULL;
