-- grantkeeper's first schema (SQLite). Times are whole seconds since the Unix epoch, sealed
-- values are BLOBs the store never opens, ids and states are TEXT; booleans are 0/1 because
-- STRICT tables have no BOOLEAN. migrations/postgres/ says the same in PostgreSQL's words.

CREATE TABLE users (
    sub             TEXT    NOT NULL PRIMARY KEY,
    email           TEXT,
    email_verified  INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1)),
    name            TEXT,
    picture         TEXT,
    given_name      TEXT,
    family_name     TEXT,
    locale          TEXT,
    hd              TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_sign_in_at INTEGER
) STRICT;

-- RISC events and operators may name a user by email.
CREATE INDEX users_email ON users (email);

-- One offline grant per user. `version` fences writers across instances.
CREATE TABLE grants (
    sub                       TEXT    NOT NULL PRIMARY KEY
                                      REFERENCES users (sub) ON DELETE CASCADE,
    state                     TEXT    NOT NULL
                                      CHECK (state IN ('active', 'failing', 'needs_consent', 'revoked')),
    -- normalised, space-delimited
    scopes                    TEXT    NOT NULL DEFAULT '',
    refresh_token             BLOB,
    rt_hash                   TEXT,
    rt_prefix_hash            TEXT,
    refresh_token_received_at INTEGER,
    access_token              BLOB,
    access_token_expires_at   INTEGER,
    reason                    TEXT,
    state_changed_at          INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    last_refresh_at           INTEGER,
    last_error                TEXT,
    version                   INTEGER NOT NULL DEFAULT 1,
    -- a held refresh token always has its fingerprints, or RISC could not find it
    CHECK ((refresh_token IS NULL) = (rt_hash IS NULL)),
    CHECK ((refresh_token IS NULL) = (rt_prefix_hash IS NULL)),
    CHECK ((access_token IS NULL) = (access_token_expires_at IS NULL))
) STRICT;

-- RISC token-revoked events name a token by one of its two fingerprints.
CREATE INDEX grants_rt_hash ON grants (rt_hash);
CREATE INDEX grants_rt_prefix_hash ON grants (rt_prefix_hash);

-- Every change of a grant's state, oldest first by id.
CREATE TABLE grant_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sub        TEXT    NOT NULL REFERENCES grants (sub) ON DELETE CASCADE,
    from_state TEXT    CHECK (from_state IN ('active', 'failing', 'needs_consent', 'revoked')),
    to_state   TEXT    NOT NULL
                       CHECK (to_state IN ('active', 'failing', 'needs_consent', 'revoked')),
    reason     TEXT    NOT NULL,
    at         INTEGER NOT NULL
) STRICT;

CREATE INDEX grant_events_sub ON grant_events (sub, id);

-- Only a hash of the session secret is kept.
CREATE TABLE sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    sub        TEXT    NOT NULL REFERENCES users (sub) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX sessions_sub ON sessions (sub);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- The vault's data keys, wrapped by the master key. Ids are key ids inside sealed values, so
-- they are never reused (AUTOINCREMENT) and stay within u32; 0 is the master key's.
CREATE TABLE data_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 4294967295),
    wrapped    BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
) STRICT;

-- At most one active key, whatever races between instances.
CREATE UNIQUE INDEX data_keys_one_active ON data_keys (active) WHERE active = 1;
