-- Grants counted by state as they change, so that /metrics and the console read a few rows
-- instead of scanning every grant. `shard` lets PostgreSQL spread concurrent writers over
-- several rows; SQLite has one writer and keeps shard 0. Readers sum the shards.
CREATE TABLE grant_counts (
    state TEXT NOT NULL,
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (state, shard)
);

INSERT INTO grant_counts (state, shard, n) SELECT state, 0, COUNT(*) FROM grants GROUP BY state;

CREATE TRIGGER grants_counted_insert AFTER INSERT ON grants BEGIN
    INSERT INTO grant_counts (state, shard, n) VALUES (new.state, 0, 1)
    ON CONFLICT (state, shard) DO UPDATE SET n = n + 1;
END;

-- Also fired by the cascade of a user's deletion.
CREATE TRIGGER grants_counted_delete AFTER DELETE ON grants BEGIN
    UPDATE grant_counts SET n = n - 1 WHERE state = old.state AND shard = 0;
END;

CREATE TRIGGER grants_counted_update AFTER UPDATE OF state ON grants
WHEN old.state <> new.state BEGIN
    UPDATE grant_counts SET n = n - 1 WHERE state = old.state AND shard = 0;
    INSERT INTO grant_counts (state, shard, n) VALUES (new.state, 0, 1)
    ON CONFLICT (state, shard) DO UPDATE SET n = n + 1;
END;
