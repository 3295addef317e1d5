//! Sweep batches: the slices of a sweep run that several sweep processes claim, each under a
//! lease. Every claim and every end of a batch holds the write lock, so two claimers never cut
//! the same users into two batches.

use super::{SqliteStore, map_sqlx};
use crate::merge::add_counts;
use crate::rows::{self, unix};
use crate::{Result, StoreError, SweepBatch, SweepBatchStore};
use async_trait::async_trait;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

/// Hands the run's first unfinished batch whose lease ended by `?2` to `?3` until `?4`, keeping
/// its progress.
const RECLAIM_EXPIRED: &str = concat!(
    "UPDATE sweep_batches SET owner = ?3, lease_until = ?4
      WHERE id = (SELECT id FROM sweep_batches
                   WHERE run_id = ?1 AND done_at IS NULL AND lease_until <= ?2
                   ORDER BY id LIMIT 1)
     RETURNING ",
    sweep_batch_columns!()
);

/// The last user of a new batch of up to `?1` users from the first.
const LAST_OF_FIRST_BATCH: &str =
    "SELECT MAX(sub) FROM (SELECT sub FROM users ORDER BY sub LIMIT ?1)";
/// The last user of a new batch of up to `?2` users after `?1`.
const LAST_OF_NEXT_BATCH: &str =
    "SELECT MAX(sub) FROM (SELECT sub FROM users WHERE sub > ?1 ORDER BY sub LIMIT ?2)";

const INSERT_BATCH: &str = concat!(
    "INSERT INTO sweep_batches (run_id, after, last, owner, lease_until)
     VALUES (?1, ?2, ?3, ?4, ?5)
     RETURNING ",
    sweep_batch_columns!()
);

#[async_trait]
impl SweepBatchStore for SqliteStore {
    async fn claim_sweep_batch(
        &self,
        run_id: i64,
        owner: &str,
        size: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<SweepBatch>> {
        let mut tx = self.begin_write().await?;
        let claimed = claim(&mut tx, run_id, owner, size, lease_until, now).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(claimed)
    }

    async fn save_batch_progress(
        &self,
        batch_id: i64,
        owner: &str,
        progress: &str,
        counts: &str,
        lease_until: OffsetDateTime,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE sweep_batches SET progress = ?3, lease_until = ?4, counts = ?5
              WHERE id = ?1 AND owner = ?2 AND done_at IS NULL",
        )
        .bind(batch_id)
        .bind(owner)
        .bind(progress)
        .bind(unix(lease_until))
        .bind(counts)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(not_held(&mut tx, batch_id).await);
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn finish_sweep_batch(
        &self,
        batch_id: i64,
        owner: &str,
        counts: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let run_id: Option<i64> = sqlx::query_scalar(
            "UPDATE sweep_batches SET done_at = ?3, progress = last, counts = ?4
              WHERE id = ?1 AND owner = ?2 AND done_at IS NULL
             RETURNING run_id",
        )
        .bind(batch_id)
        .bind(owner)
        .bind(unix(at))
        .bind(counts)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let Some(run_id) = run_id else {
            return Err(not_held(&mut tx, batch_id).await);
        };
        let held: String = sqlx::query_scalar("SELECT counts FROM sweep_runs WHERE id = ?1")
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        sqlx::query("UPDATE sweep_runs SET counts = ?2 WHERE id = ?1")
            .bind(run_id)
            .bind(add_counts(&held, counts)?)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn release_sweep_batch(&self, batch_id: i64, owner: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // A lease that ended at the epoch: the next claim takes the batch, progress and all.
        let done = sqlx::query(
            "UPDATE sweep_batches SET lease_until = 0
              WHERE id = ?1 AND owner = ?2 AND done_at IS NULL",
        )
        .bind(batch_id)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(not_held(&mut tx, batch_id).await);
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn complete_sweep_run_if_done(&self, run_id: i64, at: OffsetDateTime) -> Result<bool> {
        // Under the write lock: no batch is cut or finished while this looks.
        let mut tx = self.begin_write().await?;
        let finished = complete(&mut tx, run_id, at).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(finished)
    }
}

async fn claim(
    conn: &mut SqliteConnection,
    run_id: i64,
    owner: &str,
    size: u32,
    lease_until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Option<SweepBatch>> {
    if run_finished(conn, run_id).await? {
        return Ok(None);
    }
    // A batch whose owner died (or gave it back) comes first: its users are due.
    let expired = sqlx::query(RECLAIM_EXPIRED)
        .bind(run_id)
        .bind(unix(now))
        .bind(owner)
        .bind(unix(lease_until))
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    if let Some(row) = expired {
        return rows::sweep_batch(&row).map(Some);
    }
    // Else the next users after the run's last batch.
    let after = last_cut(conn, run_id).await?;
    let size = i64::from(size.max(1));
    let last: Option<String> = match &after {
        None => sqlx::query_scalar(LAST_OF_FIRST_BATCH).bind(size),
        Some(after) => sqlx::query_scalar(LAST_OF_NEXT_BATCH)
            .bind(after)
            .bind(size),
    }
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    let Some(last) = last else {
        return Ok(None);
    };
    let row = sqlx::query(INSERT_BATCH)
        .bind(run_id)
        .bind(after)
        .bind(last)
        .bind(owner)
        .bind(unix(lease_until))
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    rows::sweep_batch(&row).map(Some)
}

async fn complete(conn: &mut SqliteConnection, run_id: i64, at: OffsetDateTime) -> Result<bool> {
    if run_finished(conn, run_id).await? {
        return Ok(true);
    }
    let undone: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sweep_batches WHERE run_id = ?1 AND done_at IS NULL)",
    )
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if undone {
        return Ok(false);
    }
    let last = last_cut(conn, run_id).await?;
    let uncut: bool = match &last {
        None => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)"),
        Some(last) => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE sub > ?1)").bind(last)
        }
    }
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if uncut {
        return Ok(false);
    }
    // Every user up to the last batch's last is done: the run's cursor says so too.
    sqlx::query(
        "UPDATE sweep_runs SET finished_at = ?2, cursor = COALESCE(?3, cursor) WHERE id = ?1",
    )
    .bind(run_id)
    .bind(unix(at))
    .bind(last)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(true)
}

/// Whether the run is finished; [`StoreError::NotFound`] when there is no such run.
async fn run_finished(conn: &mut SqliteConnection, run_id: i64) -> Result<bool> {
    let finished_at: Option<Option<i64>> =
        sqlx::query_scalar("SELECT finished_at FROM sweep_runs WHERE id = ?1")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    finished_at
        .map(|at| at.is_some())
        .ok_or(StoreError::NotFound)
}

/// Where the run's next batch starts: the last user of its last batch (None: no batch yet).
async fn last_cut(conn: &mut SqliteConnection, run_id: i64) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT MAX(last) FROM sweep_batches WHERE run_id = ?1")
        .bind(run_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)
}

/// Why a write to a batch found no batch held by its owner: Conflict when the batch exists (it
/// is done, or another owner took it), NotFound when it does not.
async fn not_held(conn: &mut SqliteConnection, batch_id: i64) -> StoreError {
    let exists =
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM sweep_batches WHERE id = ?1)")
            .bind(batch_id)
            .fetch_one(conn)
            .await;
    match exists {
        Ok(true) => StoreError::Conflict,
        Ok(false) => StoreError::NotFound,
        Err(e) => map_sqlx(e),
    }
}
