-- Sealed values are written under the active data key only (SQLite), the twin of
-- migrations/postgres/0011_sealing_key.sql.
--
-- A sealed value starts with a 5-byte header: the version byte 0x01, then the id of the data key
-- that sealed it, big-endian (grantkeeper_core::vault). A new value of grants.refresh_token,
-- grants.access_token or pending_revocations.token must name the active data key. A process
-- that has not read a rotation's new key yet is refused here, reads the keyring again, seals
-- anew and writes again; so no value can be written under a key that a rotation is about to
-- retire, and none is left under a retired key. Not checked: values of another format, and
-- every value while no key is active (a store before its first start).
--
-- The refusal is RAISE(ABORT) with the message `sealed_under_inactive_key`, which the store
-- turns into StoreError::InactiveKey.

-- An import writes rows as the export holds them, some sealed under keys a rotation had not
-- retired yet. While an import's transaction holds a row here, the rule is off for that
-- transaction; it deletes the row before it commits, so no other writer ever sees one.
CREATE TABLE imports_under_way (
    id INTEGER NOT NULL PRIMARY KEY
) STRICT;

CREATE TRIGGER grants_sealed_under_active_key_on_insert
BEFORE INSERT ON grants
WHEN NOT EXISTS (SELECT 1 FROM imports_under_way)
 AND ((substr(NEW.refresh_token, 1, 1) = x'01' AND length(NEW.refresh_token) >= 5
       AND EXISTS (SELECT 1 FROM data_keys
                    WHERE active = 1 AND printf('%08X', id) <> hex(substr(NEW.refresh_token, 2, 4))))
   OR (substr(NEW.access_token, 1, 1) = x'01' AND length(NEW.access_token) >= 5
       AND EXISTS (SELECT 1 FROM data_keys
                    WHERE active = 1 AND printf('%08X', id) <> hex(substr(NEW.access_token, 2, 4)))))
BEGIN
    SELECT RAISE(ABORT, 'sealed_under_inactive_key');
END;

CREATE TRIGGER grants_sealed_under_active_key_on_update
BEFORE UPDATE OF refresh_token, access_token ON grants
WHEN NOT EXISTS (SELECT 1 FROM imports_under_way)
 AND ((NEW.refresh_token IS NOT OLD.refresh_token
       AND substr(NEW.refresh_token, 1, 1) = x'01' AND length(NEW.refresh_token) >= 5
       AND EXISTS (SELECT 1 FROM data_keys
                    WHERE active = 1 AND printf('%08X', id) <> hex(substr(NEW.refresh_token, 2, 4))))
   OR (NEW.access_token IS NOT OLD.access_token
       AND substr(NEW.access_token, 1, 1) = x'01' AND length(NEW.access_token) >= 5
       AND EXISTS (SELECT 1 FROM data_keys
                    WHERE active = 1 AND printf('%08X', id) <> hex(substr(NEW.access_token, 2, 4)))))
BEGIN
    SELECT RAISE(ABORT, 'sealed_under_inactive_key');
END;

CREATE TRIGGER pending_revocations_sealed_under_active_key_on_insert
BEFORE INSERT ON pending_revocations
WHEN NOT EXISTS (SELECT 1 FROM imports_under_way)
 AND substr(NEW.token, 1, 1) = x'01' AND length(NEW.token) >= 5
 AND EXISTS (SELECT 1 FROM data_keys
              WHERE active = 1 AND printf('%08X', id) <> hex(substr(NEW.token, 2, 4)))
BEGIN
    SELECT RAISE(ABORT, 'sealed_under_inactive_key');
END;

CREATE TRIGGER pending_revocations_sealed_under_active_key_on_update
BEFORE UPDATE OF token ON pending_revocations
WHEN NOT EXISTS (SELECT 1 FROM imports_under_way)
 AND NEW.token IS NOT OLD.token
 AND substr(NEW.token, 1, 1) = x'01' AND length(NEW.token) >= 5
 AND EXISTS (SELECT 1 FROM data_keys
              WHERE active = 1 AND printf('%08X', id) <> hex(substr(NEW.token, 2, 4)))
BEGIN
    SELECT RAISE(ABORT, 'sealed_under_inactive_key');
END;
