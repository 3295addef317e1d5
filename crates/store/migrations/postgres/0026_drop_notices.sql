-- Drops every instance must hear of at once (PostgreSQL only: SQLite serves one process).
--
-- Instances keep API keys (a few seconds) and access tokens (until they expire) in memory. When
-- a key is revoked or deleted, or a grant's tokens are dropped (revoked, needs consent, deleted
-- with its user: by a disconnect, a security event, an operator, another process), the row
-- written here names it in the same transaction, and `pg_notify` tells every instance that
-- listens on channel `grantkeeper_drops` when it commits (payload `ID KIND VALUE`). A
-- notification missed (a listener reconnecting) is found by the instances' periodic re-read of
-- the recent rows, by id. `value` is the key's SHA-256 (`hash`, never the secret) or the
-- grant's `sub`. Rows older than an hour are pruned by the instances.
CREATE TABLE drop_notices (
    id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind  TEXT NOT NULL CHECK (kind IN ('api_key', 'grant')),
    value TEXT COLLATE "C" NOT NULL,
    at    BIGINT NOT NULL
);

CREATE INDEX drop_notices_at ON drop_notices (at);

CREATE FUNCTION grantkeeper_drop_notice(p_kind TEXT, p_value TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_id BIGINT;
BEGIN
    INSERT INTO drop_notices (kind, value, at)
    VALUES (p_kind, p_value, extract(epoch FROM now())::BIGINT)
    RETURNING id INTO v_id;
    PERFORM pg_notify('grantkeeper_drops', v_id || ' ' || p_kind || ' ' || p_value);
END;
$$;

CREATE FUNCTION grantkeeper_api_key_dropped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM grantkeeper_drop_notice('api_key', OLD.hash);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_revoked AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION grantkeeper_api_key_dropped();

CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION grantkeeper_api_key_dropped();

CREATE FUNCTION grantkeeper_grant_dropped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM grantkeeper_drop_notice('grant', OLD.sub);
    RETURN NULL;
END;
$$;

-- A token dropped, or a grant that can no longer hand one out.
CREATE TRIGGER grants_dropped AFTER UPDATE ON grants
    FOR EACH ROW WHEN ((OLD.access_token IS NOT NULL AND NEW.access_token IS NULL)
                       OR (NEW.state <> OLD.state AND NEW.state IN ('revoked', 'needs_consent')))
    EXECUTE FUNCTION grantkeeper_grant_dropped();

CREATE TRIGGER grants_deleted AFTER DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION grantkeeper_grant_dropped();
