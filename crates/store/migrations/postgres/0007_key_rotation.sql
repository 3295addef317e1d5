-- Key rotation (PostgreSQL), the twin of migrations/sqlite/0007_key_rotation.sql: a data key is
-- retired once rotation has re-sealed every value it sealed. Its row stays, so that its id is
-- never given to another key, and `keys list` still shows it; the store no longer hands it to
-- any vault. Conventions as in 0001: whole Unix seconds. The active key is never retired.
ALTER TABLE data_keys
    ADD COLUMN retired_at BIGINT,
    ADD CONSTRAINT data_keys_retired_is_inactive CHECK (retired_at IS NULL OR NOT active);
