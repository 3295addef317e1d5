-- Cross-Account Protection (SQLite): the security events received, so that a redelivered one
-- acts once, and the accounts whose sign-in is blocked because Google disabled them as
-- hijacked. Conventions as in 0001: whole Unix seconds, TEXT ids, STRICT tables.

-- One row per security event token, by its `jti`, with the short name of its event. Kept as
-- long as a redelivery could still pass verification (tokens older than that are refused by
-- their `iat`), then pruned by `received_at`. No user is named here: events may concern
-- accounts that never signed in.
CREATE TABLE risc_events (
    jti         TEXT    NOT NULL PRIMARY KEY,
    event       TEXT    NOT NULL,
    received_at INTEGER NOT NULL
) STRICT;

CREATE INDEX risc_events_received_at ON risc_events (received_at);

-- Sign-in refused for this Google account until Google says it is enabled again. Not a foreign
-- key to users: the event may come before the account's first sign-in, and must hold for it;
-- deleting the user does not lift the block.
CREATE TABLE sign_in_blocks (
    sub        TEXT    NOT NULL PRIMARY KEY,
    reason     TEXT    NOT NULL,
    blocked_at INTEGER NOT NULL
) STRICT;
