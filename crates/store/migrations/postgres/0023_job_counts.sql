-- A job's counts kept on its row (PostgreSQL), the twin of migrations/sqlite/0023_job_counts.sql.
--
-- Every claim and report answers with the job's progress; counting its items for each answer
-- costs as much as the job is large. The job keeps how many of its items are open (pending or
-- leased), done and failed, changed in the same unit of work as the items they count (making
-- the job, a claim that fails items whose lease ran out on their last offer, a report). What is
-- left to count is small: the leases running, the skipped items by reason, and the items settled
-- in the last minute (read through their indexes). Jobs made before are counted once here.

ALTER TABLE jobs ADD COLUMN open_items BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN done_items BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN failed_items BIGINT NOT NULL DEFAULT 0;

UPDATE jobs SET
    open_items = (SELECT COUNT(*) FROM job_items i
                   WHERE i.job_id = jobs.id AND i.state IN ('pending', 'leased')),
    done_items = (SELECT COUNT(*) FROM job_items i WHERE i.job_id = jobs.id AND i.state = 'done'),
    failed_items = (SELECT COUNT(*) FROM job_items i
                     WHERE i.job_id = jobs.id AND i.state = 'failed');
