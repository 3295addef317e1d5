//! Progress of the `sweep` jobs, so that an interrupted run resumes where it stopped.

use super::{PgResult, PostgresStore, retrying};
use crate::rows::{self, unix};
use crate::{Result, StoreError, SweepRun, SweepStore};
use async_trait::async_trait;
use time::OffsetDateTime;

/// Rounds of "find the unfinished run, else start one" before giving up; a second round is
/// needed only when a concurrent start's run was finished between the two statements.
const START_ROUNDS: u32 = 3;

#[async_trait]
impl SweepStore for PostgresStore {
    async fn start_or_resume_sweep(&self, job: &str, at: OffsetDateTime) -> Result<SweepRun> {
        retrying(|| self.start_or_resume_once(job, at)).await
    }

    async fn save_sweep_progress(&self, id: i64, cursor: &str, counts: &str) -> Result<()> {
        let updated = retrying(|| async {
            let done = sqlx::query(
                "UPDATE sweep_runs SET cursor = $2, counts = $3
                  WHERE id = $1 AND finished_at IS NULL",
            )
            .bind(id)
            .bind(cursor)
            .bind(counts)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await?;
        unfinished_run_found(updated)
    }

    async fn finish_sweep(&self, id: i64, counts: &str, at: OffsetDateTime) -> Result<()> {
        let updated = retrying(|| async {
            let done = sqlx::query(
                "UPDATE sweep_runs SET finished_at = $3, counts = $2
                  WHERE id = $1 AND finished_at IS NULL",
            )
            .bind(id)
            .bind(counts)
            .bind(unix(at))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await?;
        unfinished_run_found(updated)
    }

    async fn sweep_run(&self, id: i64) -> Result<Option<SweepRun>> {
        retrying(|| async {
            let row = sqlx::query(
                "SELECT id, job, started_at, finished_at, cursor, counts
                   FROM sweep_runs WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|row| rows::sweep_run(&row)).transpose()?)
        })
        .await
    }
}

impl PostgresStore {
    async fn start_or_resume_once(&self, job: &str, at: OffsetDateTime) -> PgResult<SweepRun> {
        // Two processes starting one job find one run: the unique partial index (one
        // unfinished run per job) lets one insert, makes the other wait for its commit and
        // insert nothing, and the other's next look finds the run.
        let mut tx = self.begin().await?;
        for _ in 0..START_ROUNDS {
            let unfinished = sqlx::query(
                "SELECT id, job, started_at, finished_at, cursor, counts
                   FROM sweep_runs WHERE job = $1 AND finished_at IS NULL",
            )
            .bind(job)
            .fetch_optional(&mut *tx)
            .await?;
            let row = match unfinished {
                Some(row) => Some(row),
                None => {
                    sqlx::query(
                        "INSERT INTO sweep_runs (job, started_at, counts) VALUES ($1, $2, '{}')
                         ON CONFLICT (job) WHERE finished_at IS NULL DO NOTHING
                         RETURNING id, job, started_at, finished_at, cursor, counts",
                    )
                    .bind(job)
                    .bind(unix(at))
                    .fetch_optional(&mut *tx)
                    .await?
                }
            };
            if let Some(row) = row {
                let run = rows::sweep_run(&row)?;
                tx.commit().await?;
                return Ok(run);
            }
        }
        Err(StoreError::Unavailable(format!("could not start or resume sweep job {job:?}")).into())
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
