//! Jobs' units of work on PostgreSQL. A claim is one statement: due items are picked skipping
//! the rows other claims lock (`FOR UPDATE SKIP LOCKED`), so claimers never wait for each other
//! and never take the same item. A report is one transaction that locks the items it names
//! before it checks they are held. Making a job is one transaction; two callers joining the
//! same key meet at its unique index, and the loser reads the winner's job.

use super::{PgResult, PostgresStore, bound, retrying};
use crate::jobs::{
    COUNT_TOTAL, ClaimedItems, FINISH_IF_DONE, INSERT_JOB, ItemClaim, JobRecord, JobUnits,
    NEXT_DUE, NewJob, SELECT_JOB, SELECT_RUNNING_WITH_KEY, Settle, SettleCounts, claimed_item,
    count_retries, held_items, insert_items, job, job_args, settle_plan, tally,
};
use crate::rows::Columns;
use crate::sql::{Arg, Engine, first};
use crate::{Result, StoreError};
use async_trait::async_trait;
use sqlx::Row;

/// Fails the items whose lease ended on their last offer (counted on the job's row, which is
/// written only then), leases up to `$3` due items of running job `$1` (due by `$2`) as `$4` to
/// `$5` until `$6` (`$7`: now in seconds), and answers them with their users' grants: one round
/// trip.
const CLAIM: &str = concat!(
    "WITH job AS (SELECT id, max_attempts FROM jobs WHERE id = $1 AND state = 'running'),
     exhausted AS (
        UPDATE job_items i SET state = 'failed', reason = 'lease_expired', lease = NULL,
               detail = 'its lease ran out on every offer', settled_at = $7
          FROM job
         WHERE i.job_id = job.id AND i.state = 'leased' AND i.available_ms <= $2
           AND i.attempts >= job.max_attempts
        RETURNING i.id),
     tally AS (
        UPDATE jobs SET open_items = open_items - e.n, failed_items = failed_items + e.n
          FROM (SELECT COUNT(*) AS n FROM exhausted) e
         WHERE jobs.id = $1 AND e.n > 0),
     picked AS (
        SELECT i.id FROM job_items i, job
         WHERE i.job_id = job.id AND i.state IN ('pending', 'leased') AND i.available_ms <= $2
           AND i.attempts < job.max_attempts
         ORDER BY i.available_ms, i.id LIMIT $3
         FOR UPDATE OF i SKIP LOCKED),
     leased AS (
        UPDATE job_items i SET state = 'leased', lease = $4, owner = $5, available_ms = $6,
               attempts = i.attempts + 1
          FROM picked WHERE i.id = picked.id
        RETURNING i.id, i.sub, i.attempts, i.available_ms)
     SELECT l.id, l.sub, l.attempts, (SELECT COUNT(*) FROM exhausted) AS exhausted,
            g.sub AS grant_sub, ",
    grant_columns!("g."),
    " FROM leased l LEFT JOIN grants g ON g.sub = l.sub ORDER BY l.id"
);

#[async_trait]
impl JobUnits for PostgresStore {
    const POSITION: &'static str = "strpos";

    async fn create_job_unit(&self, new: NewJob, join: bool) -> Result<(JobRecord, bool)> {
        let at_ms = new.at.unix_timestamp().saturating_mul(1000);
        let spread_ms = i64::try_from(new.spread_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let (items_sql, extra) = insert_items(&new.selection, &new.scopes, Self::POSITION, new.at);
        let made = retrying(|| async {
            let mut tx = self.begin().await?;
            if join && let Some(key) = &new.key {
                let running = bound(&SELECT_RUNNING_WITH_KEY.into(), &args![key.as_str()])
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = running {
                    return Ok((job(&row as &dyn Columns)?, false));
                }
            }
            let id: i64 = bound(&INSERT_JOB.into(), &job_args(&new))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let mut args = args![id, at_ms, spread_ms];
            args.extend(extra.iter().cloned());
            bound(&items_sql, &args).execute(&mut *tx).await?;
            bound(&COUNT_TOTAL.into(), &args![id])
                .execute(&mut *tx)
                .await?;
            bound(&FINISH_IF_DONE.into(), &args![id, new.at])
                .execute(&mut *tx)
                .await?;
            let row = bound(&SELECT_JOB.into(), &args![id])
                .fetch_one(&mut *tx)
                .await?;
            let made = job(&row as &dyn Columns)?;
            tx.commit().await?;
            PgResult::Ok((made, true))
        })
        .await;
        match (made, &new.key) {
            // Another caller made the job with this key meanwhile: join it.
            (Err(StoreError::AlreadyExists), Some(key)) if join => {
                let running = self
                    .read_rows(SELECT_RUNNING_WITH_KEY.into(), args![key.as_str()], job)
                    .await?;
                first(running)
                    .map(|j| (j, false))
                    .ok_or(StoreError::AlreadyExists)
            }
            (made, _) => made,
        }
    }

    async fn claim_unit(&self, claim: ItemClaim) -> Result<ClaimedItems> {
        let now_s = claim.now_ms.div_euclid(1000);
        let args = args![
            claim.job_id,
            claim.now_ms,
            i64::from(claim.max),
            claim.lease.as_str(),
            claim.owner.as_str(),
            claim.lease_until_ms,
            now_s
        ];
        let found =
            retrying(|| async { Ok(bound(&CLAIM.into(), &args).fetch_all(&self.pool).await?) })
                .await?;
        let mut items = Vec::with_capacity(found.len());
        for row in &found {
            items.push(claimed_item(row as &dyn Columns)?);
        }
        if !items.is_empty() {
            return Ok(ClaimedItems {
                items,
                next_due_ms: None,
            });
        }
        // Nothing leased: an unknown job, one not running, or nothing due.
        if self
            .read_rows(SELECT_JOB.into(), args![claim.job_id], job)
            .await?
            .is_empty()
        {
            return Err(StoreError::NotFound);
        }
        self.execute(FINISH_IF_DONE.into(), args![claim.job_id, now_s])
            .await?;
        let next = self
            .read_rows(NEXT_DUE.into(), args![claim.job_id], |r| r.opt_int("min"))
            .await?;
        Ok(ClaimedItems {
            items,
            next_due_ms: first(next).flatten(),
        })
    }

    async fn settle_unit(
        &self,
        job_id: i64,
        lease: String,
        items: Vec<(i64, Settle)>,
        now_ms: i64,
    ) -> Result<SettleCounts> {
        retrying(|| async {
            let mut tx = self.begin().await?;
            let max_attempts: Option<i64> =
                sqlx::query_scalar("SELECT max_attempts FROM jobs WHERE id = $1")
                    .bind(job_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let max_attempts = max_attempts.ok_or(StoreError::NotFound)?;
            let mut args = args![job_id, lease.as_str(), now_ms];
            args.extend(items.iter().map(|(id, _)| Arg::from(*id)));
            let held = bound(&held_items(items.len(), " FOR UPDATE"), &args)
                .fetch_all(&mut *tx)
                .await?;
            if held.len() != items.len() {
                return Err(StoreError::Conflict.into());
            }
            let plan = settle_plan(job_id, items.clone(), max_attempts, now_ms);
            let mut changed = Vec::with_capacity(plan.statements.len());
            for (sql, args) in &plan.statements {
                changed.push(bound(sql, args).execute(&mut *tx).await?.rows_affected());
            }
            let counts = count_retries(&plan, &changed);
            if let Some((sql, args)) = tally(job_id, &counts) {
                bound(&sql, &args).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(counts)
        })
        .await
    }
}
