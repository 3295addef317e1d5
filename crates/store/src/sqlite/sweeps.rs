//! Progress of the `sweep` jobs, so that an interrupted run resumes where it stopped.

use super::{SqliteStore, map_sqlx};
use crate::rows::{self, unix};
use crate::{Result, StoreError, SweepRun, SweepStore};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl SweepStore for SqliteStore {
    async fn start_or_resume_sweep(&self, job: &str, at: OffsetDateTime) -> Result<SweepRun> {
        // Under the write lock, so two processes starting the same job find one run. The unique
        // partial index (one unfinished run per job) backs this up.
        let mut tx = self.begin_write().await?;
        let unfinished = sqlx::query(
            "SELECT id, job, started_at, finished_at, cursor, counts
               FROM sweep_runs WHERE job = ?1 AND finished_at IS NULL",
        )
        .bind(job)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let row = match unfinished {
            Some(row) => row,
            None => sqlx::query(
                "INSERT INTO sweep_runs (job, started_at, counts) VALUES (?1, ?2, '{}')
                 RETURNING id, job, started_at, finished_at, cursor, counts",
            )
            .bind(job)
            .bind(unix(at))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?,
        };
        let run = rows::sweep_run(&row)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(run)
    }

    async fn save_sweep_progress(&self, id: i64, cursor: &str, counts: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE sweep_runs SET cursor = ?2, counts = ?3 WHERE id = ?1 AND finished_at IS NULL",
        )
        .bind(id)
        .bind(cursor)
        .bind(counts)
        .execute(&self.write)
        .await
        .map_err(map_sqlx)?;
        unfinished_run_found(done.rows_affected())
    }

    async fn finish_sweep(&self, id: i64, counts: &str, at: OffsetDateTime) -> Result<()> {
        let done = sqlx::query(
            "UPDATE sweep_runs SET finished_at = ?3, counts = ?2
              WHERE id = ?1 AND finished_at IS NULL",
        )
        .bind(id)
        .bind(counts)
        .bind(unix(at))
        .execute(&self.write)
        .await
        .map_err(map_sqlx)?;
        unfinished_run_found(done.rows_affected())
    }

    async fn sweep_run(&self, id: i64) -> Result<Option<SweepRun>> {
        let row = sqlx::query(
            "SELECT id, job, started_at, finished_at, cursor, counts FROM sweep_runs WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .map_err(map_sqlx)?;
        row.map(|row| rows::sweep_run(&row)).transpose()
    }
}

/// Progress goes only to a run still under way: an unknown or finished run is NotFound.
fn unfinished_run_found(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}
