-- grantkeeper's first schema (PostgreSQL), the twin of migrations/sqlite/0001_initial.sql: the
-- same tables, columns, checks and indexes in PostgreSQL's words. Times are whole seconds since
-- the Unix epoch (BIGINT), sealed values are BYTEA the store never opens, ids and states are
-- TEXT. `sub` is COLLATE "C" wherever it appears: users are paged by it, and byte order is
-- SQLite's order, the same under every server locale (a locale's order would also make paging
-- depend on the server's configuration); every `sub` column has that one collation, so the
-- foreign keys between them compare alike.

CREATE TABLE users (
    sub             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    email           TEXT,
    email_verified  BOOLEAN NOT NULL DEFAULT FALSE,
    name            TEXT,
    picture         TEXT,
    given_name      TEXT,
    family_name     TEXT,
    locale          TEXT,
    hd              TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    last_sign_in_at BIGINT
);

-- RISC events and operators may name a user by email.
CREATE INDEX users_email ON users (email);

-- One offline grant per user. `version` fences writers across instances; writers also hold
-- the row with SELECT ... FOR UPDATE while they decide what to write.
CREATE TABLE grants (
    sub                       TEXT COLLATE "C" NOT NULL PRIMARY KEY
                                      REFERENCES users (sub) ON DELETE CASCADE,
    state                     TEXT    NOT NULL
                                      CHECK (state IN ('active', 'failing', 'needs_consent', 'revoked')),
    -- normalised, space-delimited
    scopes                    TEXT    NOT NULL DEFAULT '',
    refresh_token             BYTEA,
    rt_hash                   TEXT,
    rt_prefix_hash            TEXT,
    refresh_token_received_at BIGINT,
    access_token              BYTEA,
    access_token_expires_at   BIGINT,
    reason                    TEXT,
    state_changed_at          BIGINT  NOT NULL,
    updated_at                BIGINT  NOT NULL,
    last_refresh_at           BIGINT,
    last_error                TEXT,
    version                   BIGINT  NOT NULL DEFAULT 1,
    -- a held refresh token always has its fingerprints, or RISC could not find it
    CHECK ((refresh_token IS NULL) = (rt_hash IS NULL)),
    CHECK ((refresh_token IS NULL) = (rt_prefix_hash IS NULL)),
    CHECK ((access_token IS NULL) = (access_token_expires_at IS NULL))
);

-- RISC token-revoked events name a token by one of its two fingerprints.
CREATE INDEX grants_rt_hash ON grants (rt_hash);
CREATE INDEX grants_rt_prefix_hash ON grants (rt_prefix_hash);

-- Every change of a grant's state, oldest first by id (an identity never reuses a value).
CREATE TABLE grant_events (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sub        TEXT COLLATE "C" NOT NULL REFERENCES grants (sub) ON DELETE CASCADE,
    from_state TEXT    CHECK (from_state IN ('active', 'failing', 'needs_consent', 'revoked')),
    to_state   TEXT    NOT NULL
                       CHECK (to_state IN ('active', 'failing', 'needs_consent', 'revoked')),
    reason     TEXT    NOT NULL,
    at         BIGINT  NOT NULL
);

CREATE INDEX grant_events_sub ON grant_events (sub, id);

-- Only a hash of the session secret is kept.
CREATE TABLE sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    sub        TEXT COLLATE "C" NOT NULL REFERENCES users (sub) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX sessions_sub ON sessions (sub);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- The vault's data keys, wrapped by the master key. Ids are key ids inside sealed values: the
-- vault chooses them (its wrapping binds the id), they stay within u32 (0 is the master key's)
-- and are never reused, as keys are never deleted.
CREATE TABLE data_keys (
    id         BIGINT  NOT NULL PRIMARY KEY CHECK (id BETWEEN 1 AND 4294967295),
    wrapped    BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL,
    active     BOOLEAN NOT NULL DEFAULT FALSE
);

-- At most one active key, whatever races between instances.
CREATE UNIQUE INDEX data_keys_one_active ON data_keys (active) WHERE active;
