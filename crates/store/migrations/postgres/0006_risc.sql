-- Cross-Account Protection (PostgreSQL), the twin of migrations/sqlite/0006_risc.sql: the
-- security events received, so that a redelivered one acts once, and the accounts whose
-- sign-in is blocked because Google disabled them as hijacked. Conventions as in 0001: whole
-- Unix seconds, TEXT ids, `sub` COLLATE "C".

-- One row per security event token, by its `jti`, with the short name of its event. Kept as
-- long as a redelivery could still pass verification (tokens older than that are refused by
-- their `iat`), then pruned by `received_at`. No user is named here: events may concern
-- accounts that never signed in.
CREATE TABLE risc_events (
    jti         TEXT    NOT NULL PRIMARY KEY,
    event       TEXT    NOT NULL,
    received_at BIGINT  NOT NULL
);

CREATE INDEX risc_events_received_at ON risc_events (received_at);

-- Sign-in refused for this Google account until Google says it is enabled again. Not a foreign
-- key to users: the event may come before the account's first sign-in, and must hold for it;
-- deleting the user does not lift the block.
CREATE TABLE sign_in_blocks (
    sub        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    reason     TEXT    NOT NULL,
    blocked_at BIGINT  NOT NULL
);
