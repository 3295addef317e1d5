-- The bound of 20 live sessions per user (migration 0025), kept by a cheaper statement
-- (SQLite), the twin of migrations/postgres/0029_session_bound_by_index.sql.
--
-- The rule is unchanged: when a session is written, the user's sessions that expired by the new
-- one's creation are deleted, and of the others all but the 19 newest (by creation, then by
-- hash), so that with the new one 20 remain (grantkeeper_store::MAX_SESSIONS_PER_USER); the new
-- session itself is never deleted here.
--
-- 0025 ran on every session written: a walk of the user's sessions by `sessions_sub` reading
-- each row, a sort of the live ones into a scratch table and a second scratch table for the
-- `IN` list. Here the user's sessions are read from one index that holds every column the rule
-- looks at, already in age order: the 19th newest of the others is found by walking the index
-- backwards, and the sessions older than it or expired are deleted in the same walk of the
-- user's entries. No row is read from the table, nothing is sorted, no scratch table is made.
-- The new index starts with `sub`, so it also serves what `sessions_sub` served (a user's
-- sessions deleted together), and replaces it.
DROP TRIGGER sessions_bounded_per_user;
DROP INDEX sessions_sub;
CREATE INDEX sessions_sub_newest ON sessions (sub, created_at, id_hash, expires_at);
CREATE TRIGGER sessions_bounded_per_user
AFTER INSERT ON sessions
BEGIN
    DELETE FROM sessions
     WHERE sub = NEW.sub
       AND id_hash <> NEW.id_hash
       AND (expires_at <= NEW.created_at
            OR (created_at, id_hash) < (SELECT created_at, id_hash FROM sessions
                                          WHERE sub = NEW.sub AND id_hash <> NEW.id_hash
                                            AND expires_at > NEW.created_at
                                          ORDER BY created_at DESC, id_hash DESC
                                          LIMIT 1 OFFSET 18));
END;
