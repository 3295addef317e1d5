//! Sweep batches: the slices of a sweep run that several sweep processes claim, each under a
//! lease.
//!
//! A claim first takes over an unfinished batch whose lease ended, skipping any batch another
//! transaction holds (`FOR UPDATE SKIP LOCKED`: a claimer never waits for a batch being saved
//! or finished). Else it cuts a new batch while holding the run's row (`FOR UPDATE`), so that
//! claimers cut one after another, each after the batch the one before it committed: batches
//! never overlap. Finishing a batch locks the batch, then the run (to add its counts); a claim
//! that holds the run never waits for a batch, so the two orders cannot deadlock.

use super::{PgResult, PostgresStore, retrying};
use crate::merge::add_counts;
use crate::rows::{self, unix};
use crate::{Result, StoreError, SweepBatch, SweepBatchStore};
use async_trait::async_trait;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;

/// Hands the run's first unfinished batch whose lease ended by `$2`, and that no other
/// transaction holds, to `$3` until `$4`, keeping its progress.
const RECLAIM_EXPIRED: &str = concat!(
    "UPDATE sweep_batches SET owner = $3, lease_until = $4
      WHERE id = (SELECT id FROM sweep_batches
                   WHERE run_id = $1 AND done_at IS NULL AND lease_until <= $2
                   ORDER BY id LIMIT 1
                   FOR UPDATE SKIP LOCKED)
     RETURNING ",
    sweep_batch_columns!()
);

/// The last user of a new batch of up to `$1` users from the first (byte order: `sub` is
/// COLLATE "C").
const LAST_OF_FIRST_BATCH: &str =
    "SELECT MAX(sub) FROM (SELECT sub FROM users ORDER BY sub LIMIT $1) AS batch";
/// The last user of a new batch of up to `$2` users after `$1`.
const LAST_OF_NEXT_BATCH: &str =
    "SELECT MAX(sub) FROM (SELECT sub FROM users WHERE sub > $1 ORDER BY sub LIMIT $2) AS batch";

const INSERT_BATCH: &str = concat!(
    "INSERT INTO sweep_batches (run_id, after, last, owner, lease_until)
     VALUES ($1, $2, $3, $4, $5)
     RETURNING ",
    sweep_batch_columns!()
);

/// The run's end, read without holding the run.
const RUN_FINISHED_AT: &str = "SELECT finished_at FROM sweep_runs WHERE id = $1";
/// The run's row, held until the transaction ends: claimers that cut batches and the call
/// that finishes the run take turns on it.
const LOCK_RUN: &str = "SELECT finished_at FROM sweep_runs WHERE id = $1 FOR UPDATE";

#[async_trait]
impl SweepBatchStore for PostgresStore {
    async fn claim_sweep_batch(
        &self,
        run_id: i64,
        owner: &str,
        size: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<SweepBatch>> {
        retrying(|| self.claim_once(run_id, owner, size, lease_until, now)).await
    }

    async fn save_batch_progress(
        &self,
        batch_id: i64,
        owner: &str,
        progress: &str,
        counts: &str,
        lease_until: OffsetDateTime,
    ) -> Result<()> {
        retrying(|| async {
            let done = sqlx::query(
                "UPDATE sweep_batches SET progress = $3, lease_until = $4, counts = $5
                  WHERE id = $1 AND owner = $2 AND done_at IS NULL",
            )
            .bind(batch_id)
            .bind(owner)
            .bind(progress)
            .bind(unix(lease_until))
            .bind(counts)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 0 {
                return Err(not_held(&self.pool, batch_id).await?.into());
            }
            Ok(())
        })
        .await
    }

    async fn finish_sweep_batch(
        &self,
        batch_id: i64,
        owner: &str,
        counts: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        retrying(|| self.finish_once(batch_id, owner, counts, at)).await
    }

    async fn release_sweep_batch(&self, batch_id: i64, owner: &str) -> Result<()> {
        retrying(|| async {
            // A lease that ended at the epoch: the next claim takes the batch, progress and all.
            let done = sqlx::query(
                "UPDATE sweep_batches SET lease_until = 0
                  WHERE id = $1 AND owner = $2 AND done_at IS NULL",
            )
            .bind(batch_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 0 {
                return Err(not_held(&self.pool, batch_id).await?.into());
            }
            Ok(())
        })
        .await
    }

    async fn complete_sweep_run_if_done(&self, run_id: i64, at: OffsetDateTime) -> Result<bool> {
        retrying(|| self.complete_once(run_id, at)).await
    }
}

impl PostgresStore {
    async fn claim_once(
        &self,
        run_id: i64,
        owner: &str,
        size: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> PgResult<Option<SweepBatch>> {
        let mut tx = self.begin().await?;
        if run_finished(&mut tx, RUN_FINISHED_AT, run_id).await? {
            return Ok(None);
        }
        // A batch whose owner died (or gave it back) comes first: its users are due.
        let expired = sqlx::query(RECLAIM_EXPIRED)
            .bind(run_id)
            .bind(unix(now))
            .bind(owner)
            .bind(unix(lease_until))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = expired {
            let batch = rows::sweep_batch(&row)?;
            tx.commit().await?;
            return Ok(Some(batch));
        }
        // Else the next users after the run's last batch, cut while holding the run: the
        // statements below see every batch that claimers before this one committed.
        if run_finished(&mut tx, LOCK_RUN, run_id).await? {
            return Ok(None);
        }
        let after = last_cut(&mut tx, run_id).await?;
        let size = i64::from(size.max(1));
        let last: Option<String> = match &after {
            None => sqlx::query_scalar(LAST_OF_FIRST_BATCH).bind(size),
            Some(after) => sqlx::query_scalar(LAST_OF_NEXT_BATCH)
                .bind(after)
                .bind(size),
        }
        .fetch_one(&mut *tx)
        .await?;
        let Some(last) = last else {
            return Ok(None);
        };
        let row = sqlx::query(INSERT_BATCH)
            .bind(run_id)
            .bind(after)
            .bind(last)
            .bind(owner)
            .bind(unix(lease_until))
            .fetch_one(&mut *tx)
            .await?;
        let batch = rows::sweep_batch(&row)?;
        tx.commit().await?;
        Ok(Some(batch))
    }

    async fn finish_once(
        &self,
        batch_id: i64,
        owner: &str,
        counts: &str,
        at: OffsetDateTime,
    ) -> PgResult<()> {
        let mut tx = self.begin().await?;
        let run_id: Option<i64> = sqlx::query_scalar(
            "UPDATE sweep_batches SET done_at = $3, progress = last, counts = $4
              WHERE id = $1 AND owner = $2 AND done_at IS NULL
             RETURNING run_id",
        )
        .bind(batch_id)
        .bind(owner)
        .bind(unix(at))
        .bind(counts)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(run_id) = run_id else {
            return Err(not_held(&mut *tx, batch_id).await?.into());
        };
        // Batches of one run finishing together add their counts one after another.
        let held: String =
            sqlx::query_scalar("SELECT counts FROM sweep_runs WHERE id = $1 FOR UPDATE")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("UPDATE sweep_runs SET counts = $2 WHERE id = $1")
            .bind(run_id)
            .bind(add_counts(&held, counts)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn complete_once(&self, run_id: i64, at: OffsetDateTime) -> PgResult<bool> {
        // Holding the run: no batch is cut while this looks, and of two calls finishing the
        // run, the second sees the first's finished_at.
        let mut tx = self.begin().await?;
        if run_finished(&mut tx, LOCK_RUN, run_id).await? {
            return Ok(true);
        }
        let undone: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sweep_batches WHERE run_id = $1 AND done_at IS NULL)",
        )
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        if undone {
            return Ok(false);
        }
        let last = last_cut(&mut tx, run_id).await?;
        let uncut: bool = match &last {
            None => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)"),
            Some(last) => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE sub > $1)").bind(last)
            }
        }
        .fetch_one(&mut *tx)
        .await?;
        if uncut {
            return Ok(false);
        }
        // Every user up to the last batch's last is done: the run's cursor says so too.
        sqlx::query(
            "UPDATE sweep_runs SET finished_at = $2, cursor = COALESCE($3, cursor) WHERE id = $1",
        )
        .bind(run_id)
        .bind(unix(at))
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Whether the run is finished, read by `sql` (plain, or locking the run); NotFound when there
/// is no such run.
async fn run_finished(conn: &mut PgConnection, sql: &'static str, run_id: i64) -> PgResult<bool> {
    let finished_at: Option<Option<i64>> = sqlx::query_scalar(sql)
        .bind(run_id)
        .fetch_optional(conn)
        .await?;
    Ok(finished_at
        .map(|at| at.is_some())
        .ok_or(StoreError::NotFound)?)
}

/// Where the run's next batch starts: the last user of its last batch (None: no batch yet).
async fn last_cut(conn: &mut PgConnection, run_id: i64) -> PgResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT MAX(last) FROM sweep_batches WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Why a write to a batch found no batch held by its owner: Conflict when the batch exists (it
/// is done, or another owner took it), NotFound when it does not.
async fn not_held<'e>(conn: impl PgExecutor<'e>, batch_id: i64) -> PgResult<StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sweep_batches WHERE id = $1)")
            .bind(batch_id)
            .fetch_one(conn)
            .await?;
    Ok(if exists {
        StoreError::Conflict
    } else {
        StoreError::NotFound
    })
}
