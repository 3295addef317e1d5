-- The bound of 20 live sessions per user (migration 0025), kept by a cheaper statement
-- (PostgreSQL), the twin of migrations/sqlite/0029_session_bound_by_index.sql.
--
-- The rule is unchanged: when a session is written, the user's sessions that expired by the new
-- one's creation are deleted, and of the others all but the 19 newest (by creation, then by
-- hash), so that with the new one 20 remain (grantkeeper_store::MAX_SESSIONS_PER_USER); the new
-- session itself is never deleted here. Concurrent sign-ins of one user queue on the user row
-- before they write a session.
--
-- 0025 fetched each of the user's sessions from the table, sorted the live ones and hashed the
-- `IN` list. Here the 19th newest of the others is found by walking one index backwards (it
-- holds every column the rule looks at, in age order), and the sessions older than it or
-- expired are deleted from a walk of the same index. The new index starts with `sub`, so it also
-- serves what `sessions_sub` served, and replaces it.
DROP INDEX sessions_sub;
CREATE INDEX sessions_sub_newest
    ON sessions (sub, created_at, id_hash COLLATE "C", expires_at);

CREATE OR REPLACE FUNCTION grantkeeper_bound_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessions s
     WHERE s.sub = NEW.sub
       AND s.id_hash <> NEW.id_hash
       AND (s.expires_at <= NEW.created_at
            OR (s.created_at, s.id_hash COLLATE "C")
               < (SELECT o.created_at, o.id_hash COLLATE "C" FROM sessions o
                   WHERE o.sub = NEW.sub AND o.id_hash <> NEW.id_hash
                     AND o.expires_at > NEW.created_at
                   ORDER BY o.created_at DESC, o.id_hash COLLATE "C" DESC
                   LIMIT 1 OFFSET 18));
    RETURN NULL;
END;
$$;
