-- Coalesced audit rows (PostgreSQL): identical acts of one actor for one user within the audit
-- writer's window (a second) are kept as one row with how many there were and when the last
-- one happened. Rows written before this migration stand for one act each.
ALTER TABLE audit
    ADD COLUMN times   BIGINT NOT NULL DEFAULT 1 CHECK (times >= 1),
    -- Unix seconds of the last act the row stands for; NULL (older rows) means `at`.
    ADD COLUMN last_at BIGINT;
