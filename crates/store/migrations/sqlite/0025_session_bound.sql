-- A user keeps at most 20 live sessions (SQLite), the twin of
-- migrations/postgres/0025_session_bound.sql.
--
-- Every sign-in opens a session, so without a bound the table grows with every sign-in. When a
-- session is written, in the same statement (and so in the sign-in's unit of work), the user's
-- sessions that expired by the new one's creation are deleted, and of the others all but the 19
-- newest (by creation, then by hash), so that with the new one 20 remain
-- (grantkeeper_store::MAX_SESSIONS_PER_USER). The new session itself is never deleted here.
-- Expired sessions of users who do not sign in again are purged by the servers' housekeeping.
CREATE TRIGGER sessions_bounded_per_user
AFTER INSERT ON sessions
BEGIN
    DELETE FROM sessions
     WHERE sub = NEW.sub
       AND id_hash <> NEW.id_hash
       AND (expires_at <= NEW.created_at
            OR id_hash IN (SELECT id_hash FROM sessions
                            WHERE sub = NEW.sub AND id_hash <> NEW.id_hash
                              AND expires_at > NEW.created_at
                            ORDER BY created_at DESC, id_hash DESC
                            LIMIT -1 OFFSET 19));
END;
