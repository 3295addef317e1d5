//! Sweep batches: the slices of a sweep run that several sweep processes claim, each under a
//! lease. Every claim and every end of a batch is a unit of the writer, under the write lock,
//! so two claimers never cut the same users into two batches.

use super::SqliteStore;
use super::conn::{execute, one, scalar};
use crate::merge::add_counts;
use crate::{Result, StoreError, SweepBatch, SweepBatchStore, rows as read};
use async_trait::async_trait;
use rusqlite::Connection;
use time::OffsetDateTime;

/// Hands the run's first unfinished batch whose lease ended by `$2` to `$3` until `$4`, keeping
/// its progress.
const RECLAIM_EXPIRED: &str = concat!(
    "UPDATE sweep_batches SET owner = $3, lease_until = $4
      WHERE id = (SELECT id FROM sweep_batches
                   WHERE run_id = $1 AND done_at IS NULL AND lease_until <= $2
                   ORDER BY id LIMIT 1)
     RETURNING ",
    sweep_batch_columns!()
);

const INSERT_BATCH: &str = concat!(
    "INSERT INTO sweep_batches (run_id, after, last, owner, lease_until)
     VALUES ($1, $2, $3, $4, $5)
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
        let owner = owner.to_owned();
        self.write(move |conn| claim(conn, run_id, &owner, size, lease_until, now))
            .await
    }

    async fn save_batch_progress(
        &self,
        batch_id: i64,
        owner: &str,
        progress: &str,
        counts: &str,
        lease_until: OffsetDateTime,
    ) -> Result<()> {
        let args = args![batch_id, owner, progress, lease_until, counts];
        self.write(move |conn| {
            let done = execute(
                conn,
                "UPDATE sweep_batches SET progress = $3, lease_until = $4, counts = $5
                  WHERE id = $1 AND owner = $2 AND done_at IS NULL",
                &args,
            )?;
            held(conn, batch_id, done)
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
        let args = args![batch_id, owner, at, counts];
        let counts = counts.to_owned();
        self.write(move |conn| {
            let run_id = one(
                conn,
                "UPDATE sweep_batches SET done_at = $3, progress = last, counts = $4
                  WHERE id = $1 AND owner = $2 AND done_at IS NULL
                 RETURNING run_id",
                &args,
                |r| r.int("run_id"),
            )?;
            let Some(run_id) = run_id else {
                return held(conn, batch_id, 0);
            };
            let total: String = scalar(
                conn,
                "SELECT counts FROM sweep_runs WHERE id = $1",
                &args![run_id],
            )?;
            execute(
                conn,
                "UPDATE sweep_runs SET counts = $2 WHERE id = $1",
                &args![run_id, add_counts(&total, &counts)?],
            )
            .map(drop)
        })
        .await
    }

    async fn release_sweep_batch(&self, batch_id: i64, owner: &str) -> Result<()> {
        // A lease that ended at the epoch: the next claim takes the batch, progress and all.
        let args = args![batch_id, owner];
        self.write(move |conn| {
            let done = execute(
                conn,
                "UPDATE sweep_batches SET lease_until = 0
                  WHERE id = $1 AND owner = $2 AND done_at IS NULL",
                &args,
            )?;
            held(conn, batch_id, done)
        })
        .await
    }

    async fn complete_sweep_run_if_done(&self, run_id: i64, at: OffsetDateTime) -> Result<bool> {
        // Under the write lock: no batch is cut or finished while this looks.
        self.write(move |conn| complete(conn, run_id, at)).await
    }
}

fn claim(
    conn: &Connection,
    run_id: i64,
    owner: &str,
    size: u32,
    lease_until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Option<SweepBatch>> {
    if run_finished(conn, run_id)? {
        return Ok(None);
    }
    // A batch whose owner died (or gave it back) comes first: its users are due.
    let expired = one(
        conn,
        RECLAIM_EXPIRED,
        &args![run_id, now, owner, lease_until],
        read::sweep_batch,
    )?;
    if expired.is_some() {
        return Ok(expired);
    }
    // Else the next users after the run's last batch.
    let after = last_cut(conn, run_id)?;
    let size = i64::from(size.max(1));
    let last: Option<String> = match &after {
        None => scalar(
            conn,
            "SELECT MAX(sub) FROM (SELECT sub FROM users ORDER BY sub LIMIT $1)",
            &args![size],
        )?,
        Some(after) => scalar(
            conn,
            "SELECT MAX(sub) FROM (SELECT sub FROM users WHERE sub > $1 ORDER BY sub LIMIT $2)",
            &args![after.as_str(), size],
        )?,
    };
    let Some(last) = last else {
        return Ok(None);
    };
    one(
        conn,
        INSERT_BATCH,
        &args![run_id, after, last, owner, lease_until],
        read::sweep_batch,
    )
}

fn complete(conn: &Connection, run_id: i64, at: OffsetDateTime) -> Result<bool> {
    if run_finished(conn, run_id)? {
        return Ok(true);
    }
    let undone: bool = scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM sweep_batches WHERE run_id = $1 AND done_at IS NULL)",
        &args![run_id],
    )?;
    if undone {
        return Ok(false);
    }
    let last = last_cut(conn, run_id)?;
    let uncut: bool = match &last {
        None => scalar(conn, "SELECT EXISTS (SELECT 1 FROM users)", &[])?,
        Some(last) => scalar(
            conn,
            "SELECT EXISTS (SELECT 1 FROM users WHERE sub > $1)",
            &args![last.as_str()],
        )?,
    };
    if uncut {
        return Ok(false);
    }
    // Every user up to the last batch's last is done: the run's cursor says so too.
    execute(
        conn,
        "UPDATE sweep_runs SET finished_at = $2, cursor = COALESCE($3, cursor) WHERE id = $1",
        &args![run_id, at, last],
    )?;
    Ok(true)
}

/// Whether the run is finished; [`StoreError::NotFound`] when there is no such run.
fn run_finished(conn: &Connection, run_id: i64) -> Result<bool> {
    one(
        conn,
        "SELECT finished_at FROM sweep_runs WHERE id = $1",
        &args![run_id],
        |r| r.opt_int("finished_at"),
    )?
    .map(|at| at.is_some())
    .ok_or(StoreError::NotFound)
}

/// Where the run's next batch starts: the last user of its last batch (None: no batch yet).
fn last_cut(conn: &Connection, run_id: i64) -> Result<Option<String>> {
    scalar(
        conn,
        "SELECT MAX(last) FROM sweep_batches WHERE run_id = $1",
        &args![run_id],
    )
}

/// A write to a batch found no batch held by its owner when `changed` is 0: Conflict when the
/// batch exists (it is done, or another owner took it), NotFound when it does not.
fn held(conn: &Connection, batch_id: i64, changed: u64) -> Result<()> {
    if changed > 0 {
        return Ok(());
    }
    let exists: bool = scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM sweep_batches WHERE id = $1)",
        &args![batch_id],
    )?;
    Err(if exists {
        StoreError::Conflict
    } else {
        StoreError::NotFound
    })
}
