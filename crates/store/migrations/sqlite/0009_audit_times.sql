-- Coalesced audit rows (SQLite): identical acts of one actor for one user within the audit
-- writer's window (a second) are kept as one row with how many there were and when the last
-- one happened. Rows written before this migration stand for one act each.
ALTER TABLE audit ADD COLUMN times INTEGER NOT NULL DEFAULT 1 CHECK (times >= 1);
-- Unix seconds of the last act the row stands for; NULL (older rows) means `at`.
ALTER TABLE audit ADD COLUMN last_at INTEGER;
