-- A user keeps at most 20 live sessions (PostgreSQL), the twin of
-- migrations/sqlite/0025_session_bound.sql.
--
-- Every sign-in opens a session, so without a bound the table grows with every sign-in. When a
-- session is written, in the same statement (and so in the sign-in's one call of
-- grantkeeper_sign_in), the user's sessions that expired by the new one's creation are deleted,
-- and of the others all but the 19 newest (by creation, then by hash), so that with the new one
-- 20 remain (grantkeeper_store::MAX_SESSIONS_PER_USER). The new session itself is never deleted
-- here. Concurrent sign-ins of one user queue on the user row before they write a session.
-- Expired sessions of users who do not sign in again are purged by the servers' housekeeping.
CREATE FUNCTION grantkeeper_bound_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessions s
     WHERE s.sub = NEW.sub
       AND s.id_hash <> NEW.id_hash
       AND (s.expires_at <= NEW.created_at
            OR s.id_hash IN (SELECT o.id_hash FROM sessions o
                              WHERE o.sub = NEW.sub AND o.id_hash <> NEW.id_hash
                                AND o.expires_at > NEW.created_at
                              ORDER BY o.created_at DESC, o.id_hash COLLATE "C" DESC
                              OFFSET 19));
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_bounded_per_user AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION grantkeeper_bound_sessions();
