//! Jobs' units of work on SQLite: each one closure on the writer, under its write lock, so a
//! claim and a report never interleave with another's.

use super::SqliteStore;
use super::conn::{execute, one, rows, scalar};
use crate::jobs::{
    COUNT_TOTAL, ClaimedItems, FAIL_EXHAUSTED, FINISH_IF_DONE, INSERT_JOB, ItemClaim, JobRecord,
    JobUnits, LEASE_ITEMS, NEXT_DUE, NewJob, SELECT_JOB, SELECT_LEASED, SELECT_RUNNING_WITH_KEY,
    Settle, SettleCounts, claimed_item, count_retries, held_items, insert_items, job, job_args,
    settle_plan, tally,
};
use crate::sql::Arg;
use crate::{Result, StoreError};
use async_trait::async_trait;
use rusqlite::Connection;

#[async_trait]
impl JobUnits for SqliteStore {
    const POSITION: &'static str = "instr";

    async fn create_job_unit(&self, new: NewJob, join: bool) -> Result<(JobRecord, bool)> {
        self.write(move |conn| {
            if join
                && let Some(key) = &new.key
                && let Some(running) =
                    one(conn, SELECT_RUNNING_WITH_KEY, &args![key.as_str()], job)?
            {
                return Ok((running, false));
            }
            let id: i64 = scalar(conn, INSERT_JOB, &job_args(&new))?;
            let at_ms = new.at.unix_timestamp().saturating_mul(1000);
            let spread_ms = i64::try_from(new.spread_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let (sql, extra) = insert_items(&new.selection, &new.scopes, Self::POSITION, new.at);
            let mut args = args![id, at_ms, spread_ms];
            args.extend(extra);
            execute(conn, &sql, &args)?;
            execute(conn, COUNT_TOTAL, &args![id])?;
            execute(conn, FINISH_IF_DONE, &args![id, new.at])?;
            let made = one(conn, SELECT_JOB, &args![id], job)?.ok_or(StoreError::NotFound)?;
            Ok((made, true))
        })
        .await
    }

    async fn claim_unit(&self, claim: ItemClaim) -> Result<ClaimedItems> {
        self.write_lazy(move |conn| claim_in(conn, &claim)).await
    }

    async fn settle_unit(
        &self,
        job_id: i64,
        lease: String,
        items: Vec<(i64, Settle)>,
        now_ms: i64,
    ) -> Result<SettleCounts> {
        self.write(move |conn| {
            let max_attempts: Option<i64> = one(
                conn,
                "SELECT max_attempts FROM jobs WHERE id = $1",
                &args![job_id],
                |r| r.int("max_attempts"),
            )?;
            let max_attempts = max_attempts.ok_or(StoreError::NotFound)?;
            let mut args = args![job_id, lease.as_str(), now_ms];
            args.extend(items.iter().map(|(id, _)| Arg::from(*id)));
            let held = rows(conn, &held_items(items.len(), ""), &args, |r| r.int("id"))?;
            if held.len() != items.len() {
                return Err(StoreError::Conflict);
            }
            let plan = settle_plan(job_id, items, max_attempts, now_ms);
            let mut changed = Vec::with_capacity(plan.statements.len());
            for (sql, args) in &plan.statements {
                changed.push(execute(conn, sql, args)?);
            }
            let counts = count_retries(&plan, &changed);
            if let Some((sql, args)) = tally(job_id, &counts) {
                execute(conn, &sql, &args)?;
            }
            Ok(counts)
        })
        .await
    }
}

fn claim_in(conn: &Connection, claim: &ItemClaim) -> Result<ClaimedItems> {
    let state: Option<String> = one(
        conn,
        "SELECT state FROM jobs WHERE id = $1",
        &args![claim.job_id],
        |r| r.text("state"),
    )?;
    let state = state.ok_or(StoreError::NotFound)?;
    if state != "running" {
        return Ok(ClaimedItems {
            items: Vec::new(),
            next_due_ms: None,
        });
    }
    let now_s = claim.now_ms.div_euclid(1000);
    let exhausted = execute(
        conn,
        FAIL_EXHAUSTED,
        &args![claim.job_id, claim.now_ms, now_s],
    )?;
    let failed = SettleCounts {
        failed: exhausted,
        ..SettleCounts::default()
    };
    if let Some((sql, args)) = tally(claim.job_id, &failed) {
        execute(conn, &sql, &args)?;
    }
    execute(
        conn,
        LEASE_ITEMS,
        &args![
            claim.job_id,
            claim.now_ms,
            i64::from(claim.max),
            claim.lease.as_str(),
            claim.owner.as_str(),
            claim.lease_until_ms
        ],
    )?;
    let items = rows(
        conn,
        SELECT_LEASED,
        &args![claim.lease.as_str()],
        crate::jobs::claimed_item,
    )?;
    let _ = claimed_item;
    let mut next_due_ms = None;
    if items.is_empty() {
        next_due_ms = scalar::<Option<i64>>(conn, NEXT_DUE, &args![claim.job_id])?;
        if exhausted > 0 {
            execute(conn, FINISH_IF_DONE, &args![claim.job_id, now_s])?;
        }
    }
    Ok(ClaimedItems { items, next_due_ms })
}
