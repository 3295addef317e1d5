-- Sealed values are written under the active data key only (PostgreSQL), the twin of
-- migrations/sqlite/0011_sealing_key.sql, which says why.
--
-- The refusal is a check_violation naming the constraint `sealed_under_active_key`, which the
-- store turns into StoreError::InactiveKey. A writer that read the active key just before a
-- rotation committed may still commit under the old key; rotation's verification passes
-- re-seal such a value, and retirement locks the sealed tables against writers while it
-- counts, so that no such value can appear after a key is retired.

-- See the SQLite twin: the rule is off inside an import's transaction while it holds a row
-- here; other transactions never see that row.
CREATE TABLE imports_under_way (
    id BIGINT NOT NULL PRIMARY KEY
);

-- True when `sealed` is of the vault's format 1 and names a key other than the active one,
-- while a key is active and no import is under way in this transaction.
CREATE FUNCTION sealed_under_inactive_key(sealed BYTEA) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT sealed IS NOT NULL AND length(sealed) >= 5 AND get_byte(sealed, 0) = 1
       AND NOT EXISTS (SELECT 1 FROM imports_under_way)
       AND EXISTS (SELECT 1 FROM data_keys
                    WHERE active
                      AND substr(sealed, 2, 4) <> decode(lpad(to_hex(id), 8, '0'), 'hex'))
$$;

CREATE FUNCTION refuse_sealed_under_inactive_key() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a sealed value names a data key that is not the active one'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'sealed_under_active_key';
END
$$;

CREATE TRIGGER grants_sealed_under_active_key_on_insert
BEFORE INSERT ON grants FOR EACH ROW
WHEN (sealed_under_inactive_key(NEW.refresh_token) OR sealed_under_inactive_key(NEW.access_token))
EXECUTE FUNCTION refuse_sealed_under_inactive_key();

CREATE TRIGGER grants_sealed_under_active_key_on_update
BEFORE UPDATE OF refresh_token, access_token ON grants FOR EACH ROW
WHEN ((NEW.refresh_token IS DISTINCT FROM OLD.refresh_token
       AND sealed_under_inactive_key(NEW.refresh_token))
   OR (NEW.access_token IS DISTINCT FROM OLD.access_token
       AND sealed_under_inactive_key(NEW.access_token)))
EXECUTE FUNCTION refuse_sealed_under_inactive_key();

CREATE TRIGGER pending_revocations_sealed_under_active_key_on_insert
BEFORE INSERT ON pending_revocations FOR EACH ROW
WHEN (sealed_under_inactive_key(NEW.token))
EXECUTE FUNCTION refuse_sealed_under_inactive_key();

CREATE TRIGGER pending_revocations_sealed_under_active_key_on_update
BEFORE UPDATE OF token ON pending_revocations FOR EACH ROW
WHEN (NEW.token IS DISTINCT FROM OLD.token AND sealed_under_inactive_key(NEW.token))
EXECUTE FUNCTION refuse_sealed_under_inactive_key();
