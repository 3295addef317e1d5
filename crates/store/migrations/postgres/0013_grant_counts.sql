-- Grants counted by state as they change, so that /metrics and the console read a few rows
-- instead of scanning every grant. Each connection adds to its own shard (its backend's pid
-- modulo 16), so that concurrent sign-ins do not queue on one counter row; readers sum the
-- shards. A change of state writes its two rows in one statement, in state order, so that two
-- writers meeting on a shard lock them in the same order.
CREATE TABLE grant_counts (
    state TEXT COLLATE "C" NOT NULL,
    shard INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (state, shard)
);

INSERT INTO grant_counts (state, shard, n) SELECT state, 0, COUNT(*) FROM grants GROUP BY state;

CREATE FUNCTION grantkeeper_count_grants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shard INTEGER := pg_backend_pid() % 16;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO grant_counts AS c (state, shard, n) VALUES (NEW.state, v_shard, 1)
        ON CONFLICT (state, shard) DO UPDATE SET n = c.n + 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO grant_counts AS c (state, shard, n) VALUES (OLD.state, v_shard, -1)
        ON CONFLICT (state, shard) DO UPDATE SET n = c.n - 1;
    ELSIF OLD.state <> NEW.state THEN
        INSERT INTO grant_counts AS c (state, shard, n)
        SELECT v.state, v_shard, v.n
          FROM (VALUES (OLD.state, -1), (NEW.state, 1)) AS v (state, n)
         ORDER BY v.state COLLATE "C"
        ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER grants_counted AFTER INSERT OR DELETE OR UPDATE OF state ON grants
    FOR EACH ROW EXECUTE FUNCTION grantkeeper_count_grants();
