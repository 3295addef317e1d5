-- Key rotation (SQLite): a data key is retired once rotation has re-sealed every value it
-- sealed. Its row stays, so that its id is never given to another key, and `keys list` still
-- shows it; the store no longer hands it to any vault. Conventions as in 0001: whole Unix
-- seconds. The active key is never retired.
ALTER TABLE data_keys ADD COLUMN retired_at INTEGER CHECK (retired_at IS NULL OR active = 0);
