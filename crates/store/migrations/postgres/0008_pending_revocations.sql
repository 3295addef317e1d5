-- The revocation queue (PostgreSQL), the twin of migrations/sqlite/0008_pending_revocations.sql:
-- tokens whose revocation at the provider did not get through when their grant was revoked or
-- their user deleted here, kept sealed until a retry does. Conventions as in 0001: whole Unix
-- seconds, TEXT ids, `sub` COLLATE "C".

-- `id` is chosen by grantkeeper (`rev_<random>`) before the insert: the token is sealed under
-- it (AAD `grantkeeper/pending_revocation/<id>`), so a token copied into another row does not
-- open. `sub` is not a foreign key: the user may be deleted while the revocation waits, and the
-- revocation must outlive them. `token_kind` says which token of the grant was held. Due at
-- `next_attempt_at`; `attempts` counts the retries that failed, `last_error` says why the last
-- one did (the provider's error as its client words it, never a token).
CREATE TABLE pending_revocations (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    sub             TEXT COLLATE "C" NOT NULL,
    token           BYTEA   NOT NULL,
    token_kind      TEXT    NOT NULL CHECK (token_kind IN ('refresh', 'access')),
    created_at      BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at BIGINT  NOT NULL,
    last_error      TEXT
);

-- What the retry task looks at: the entries due first.
CREATE INDEX pending_revocations_due ON pending_revocations (next_attempt_at, id);
