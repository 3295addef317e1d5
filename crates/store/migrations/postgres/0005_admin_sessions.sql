-- The admin console (PostgreSQL), the twin of migrations/sqlite/0005_admin_sessions.sql:
-- sessions of operators who signed in with an API key. Conventions as in 0001: whole Unix
-- seconds, TEXT ids; key ids COLLATE "C" as api_keys.id is since 0003.

-- Only a hash of the session secret is kept. A session belongs to the API key it was opened
-- with: deleting the key deletes its sessions, and the console refuses a session whose key is
-- revoked. Expired sessions are purged when an operator signs in.
CREATE TABLE admin_sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    key_id     TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX admin_sessions_key_id ON admin_sessions (key_id);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);

-- The console's user search matches a substring of the email, which no B-tree index can
-- serve; it walks users in sub order (the primary key) and stops after a page of matches, so
-- it adds no index to users.
