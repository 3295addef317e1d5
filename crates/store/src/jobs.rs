//! Jobs: bulk work over users, kept in the store so that a job survives a restart of every
//! instance and is shared by every instance and worker on the store ([`JobStore`]).
//!
//! A job is a row of `jobs`; each of its users is an item, a row of `job_items`, made when the
//! job is. An item is `pending` until its `available_ms`, then offered to the next claim, which
//! leases it: `leased` under the claim's lease name until `available_ms` (the lease's end), when
//! it is offered again (at least once, never to two claims at once). A lease holder settles it
//! `done`, `failed` or `skipped` (with a reason), or gives it back `pending` (a retry). The rate
//! budget of a job is a row of slots (`slot_us` apart on a grid from the Unix epoch), taken in
//! order by every instance through one statement.
//!
//! Leaves to others: what a job does for a user, handing out tokens (the broker), and what a
//! worker is.

use crate::rows::Columns;
use crate::sql::{Arg, Engine, Sql, first};
use crate::{GrantRecord, Result, StoreError, page_limit};
use async_trait::async_trait;
use grantkeeper_core::Scopes;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Items are offered to claims.
    Running,
    /// No item is pending or leased any more.
    Finished,
    /// Stopped by a person: nothing more is offered; reports of items held are still recorded.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 3] = [JobState::Running, JobState::Finished, JobState::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// Where an item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    Pending,
    Leased,
    Done,
    Failed,
    Skipped,
}

impl ItemState {
    pub const ALL: [ItemState; 5] = [
        ItemState::Pending,
        ItemState::Leased,
        ItemState::Done,
        ItemState::Failed,
        ItemState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Leased => "leased",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
            ItemState::Skipped => "skipped",
        }
    }
}

impl FromStr for ItemState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemState::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| format!("unknown item state {s:?}"))
    }
}

/// Which users a new job holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every user whose grant holds every scope of the job (every user when it names none).
    /// Users whose grant is revoked or needs consent are settled `skipped` at once.
    Holding,
    /// Every user, whatever their grant (the sweeps, which report every user).
    Everyone,
    /// Usable grants (a refresh token held, `active` or `failing`) whose refresh token was last
    /// used or received before this time: keep-alive.
    IdleSince(OffsetDateTime),
}

/// A job to make.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub name: String,
    /// `api`, or grantkeeper's own (`sweep:refresh`, `sweep:drive-appdata`, `keepalive`, `run`).
    pub kind: String,
    /// At most one running job has a given key (the sweeps', keep-alive's and each `jobs run`
    /// name's): [`JobStore::create_or_join_job`] joins it.
    pub key: Option<String>,
    pub scopes: Scopes,
    pub selection: Selection,
    /// Upstream refreshes a second at most; None: no limit.
    pub rate: Option<f64>,
    pub lease_secs: u32,
    pub min_ttl_secs: u32,
    pub max_attempts: u32,
    /// The items become due one after another, evenly over this many seconds from `at` (in
    /// `sub` order); 0: all at once.
    pub spread_secs: u64,
    /// Who made it (an API key's id, `cli`, `serve`).
    pub created_by: String,
    pub at: OffsetDateTime,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub key: Option<String>,
    pub state: JobState,
    pub scopes: Scopes,
    pub rate: Option<f64>,
    pub lease_secs: u32,
    pub min_ttl_secs: u32,
    pub max_attempts: u32,
    /// Its items, fixed when it was made.
    pub total: u64,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// How a job's items stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Pending, and leased items whose lease ended (offered again).
    pub pending: u64,
    /// Leased, the lease still running.
    pub in_flight: u64,
    pub done: u64,
    pub failed: u64,
    /// Skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Items settled in the 60 seconds before the time asked about.
    pub settled_last_minute: u64,
}

impl JobCounts {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
    /// Items settled for good: done, failed or skipped.
    pub fn settled(&self) -> u64 {
        self.done + self.failed + self.skipped_total()
    }
}

/// An item settled (failed or skipped), as the failures of a job show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledItem {
    pub id: i64,
    pub sub: String,
    pub state: ItemState,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub at: Option<OffsetDateTime>,
}

/// A claim: up to `max` items due at `now_ms`, leased as `lease` to `owner` until
/// `lease_until_ms`.
#[derive(Clone, Debug)]
pub struct ItemClaim {
    pub job_id: i64,
    pub lease: String,
    pub owner: String,
    pub max: u32,
    pub now_ms: i64,
    pub lease_until_ms: i64,
}

/// One item leased by a claim, with its user's grant as it is now (None: the user is gone).
#[derive(Clone, Debug)]
pub struct ClaimedItem {
    pub id: i64,
    pub sub: String,
    /// How many times it was offered, this time included.
    pub attempt: u32,
    pub grant: Option<GrantRecord>,
}

/// What a claim got (a job not running leases nothing).
#[derive(Clone, Debug)]
pub struct ClaimedItems {
    pub items: Vec<ClaimedItem>,
    /// When nothing was leased: the earliest time (ms) an item of the job may be due (a
    /// pending one, or a lease ending); None when no item is open.
    pub next_due_ms: Option<i64>,
}

/// What becomes of an item its lease holder settles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    Done,
    /// Offered again at `at_ms`, or failed with `reason` `attempts` when it was offered
    /// `max_attempts` times already.
    Retry {
        at_ms: i64,
        detail: Option<String>,
    },
    Failed {
        reason: String,
        detail: Option<String>,
    },
    Skipped {
        reason: String,
        detail: Option<String>,
    },
    /// Given back unworked at `at_ms`, as if this claim had not offered it (its attempt is not
    /// counted): the claim had no rate left for it, or the worker stopped first.
    Release {
        at_ms: i64,
    },
}

/// How many items a report moved, by what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleCounts {
    pub done: u64,
    /// Offered again later.
    pub retry: u64,
    /// Failed: as reported, or retried once too often.
    pub failed: u64,
    pub skipped: u64,
    pub released: u64,
}

/// How far a job stands in `sub` order (the sweeps' view of a run, whose users are claimed in
/// that order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubProgress {
    /// The smallest `sub` of an item pending or leased; None when none is.
    pub first_open: Option<String>,
    /// The largest `sub` of an item settled below `first_open` (of all, when none is open):
    /// every item up to it is settled. None when none is.
    pub settled_through: Option<String>,
}

/// Refresh slots a job's claim took: `granted` slots from `first_us`, `slot_us` apart (Unix
/// microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    pub first_us: i64,
    pub slot_us: i64,
    pub granted: u32,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Makes the job and its items in one transaction. [`crate::StoreError::AlreadyExists`]
    /// when a running job has its key. The job is finished at once when no item is left open.
    async fn create_job(&self, job: NewJob) -> Result<JobRecord>;
    /// The running job with `job.key`, or a new one ([`JobStore::create_job`]); true when
    /// made. Of several callers at once, one makes it and the others join it.
    async fn create_or_join_job(&self, job: NewJob) -> Result<(JobRecord, bool)>;
    async fn job(&self, id: i64) -> Result<Option<JobRecord>>;
    /// Jobs newest first, in `state` when given; at most `limit` (capped at
    /// [`crate::MAX_PAGE`]).
    async fn list_jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<JobRecord>>;
    /// The newest job with `key`, whatever its state.
    async fn latest_job_with_key(&self, key: &str) -> Result<Option<JobRecord>>;
    /// How the job's items stand at `now_ms`.
    async fn job_counts(&self, id: i64, now_ms: i64) -> Result<JobCounts>;
    /// Where the job stands in `sub` order.
    async fn settled_through(&self, id: i64) -> Result<SubProgress>;
    /// The job's items failed or skipped, the last settled first.
    async fn job_failures(&self, id: i64, limit: u32) -> Result<Vec<SettledItem>>;
    /// Leases up to `claim.max` due items of a running job: pending ones due by `now_ms` and
    /// those whose lease ended, earliest due first; items whose lease ended `max_attempts`
    /// times are failed (`lease_expired`) instead. Atomic across processes: an item goes to
    /// one claim at a time. Unknown job: [`crate::StoreError::NotFound`].
    async fn claim_items(&self, claim: ItemClaim) -> Result<ClaimedItems>;
    /// Settles items of one claim, all or none: [`crate::StoreError::Conflict`] when any of
    /// them is not leased under `lease` with its lease running at `now_ms` (and nothing
    /// changes). Finishes a running job whose items are all settled.
    async fn settle_items(
        &self,
        job_id: i64,
        lease: &str,
        items: Vec<(i64, Settle)>,
        now_ms: i64,
    ) -> Result<SettleCounts>;
    /// Extends the lease of the claim's items still held to `until_ms`; how many.
    async fn renew_items(
        &self,
        job_id: i64,
        lease: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<u64>;
    /// Takes up to `want` refresh slots of a job with a rate: the next free ones on its grid,
    /// none before `now_us`, none after `now_us + horizon_us`. Unknown job, or a job without a
    /// rate: NotFound.
    async fn take_refresh_slots(
        &self,
        job_id: i64,
        want: u32,
        now_us: i64,
        horizon_us: i64,
    ) -> Result<Slots>;
    /// Cancels a running job (a job already ended stays as it is); the job as it is now.
    /// Unknown job: NotFound.
    async fn cancel_job(&self, id: i64, at: OffsetDateTime) -> Result<JobRecord>;
}

/// The microseconds between two refresh slots of a job with this rate (at least 1).
pub fn slot_us(rate: f64) -> i64 {
    let us = (1_000_000.0 / rate).ceil();
    if us.is_finite() && us >= 1.0 {
        // Bounded above by 1e8 (a rate of at least 0.01 a second), so it fits.
        us.min(1e12) as i64
    } else {
        1
    }
}

/// The job's columns, as [`job`] reads them.
pub(crate) const JOB_COLUMNS: &str = "id, name, kind, job_key, state, scopes, rate_milli, lease_secs, \
     min_ttl_secs, max_attempts, total, created_by, created_at, finished_at";

fn small(row: &dyn Columns, column: &'static str) -> Result<u32> {
    u32::try_from(row.int(column)?)
        .map_err(|_| StoreError::Corrupt(format!("{column} is out of range")))
}

fn secs(row: &dyn Columns, column: &'static str) -> Result<Option<OffsetDateTime>> {
    row.opt_int(column)?
        .map(|s| {
            OffsetDateTime::from_unix_timestamp(s)
                .map_err(|_| StoreError::Corrupt(format!("{column} is out of range")))
        })
        .transpose()
}

/// Reads a job (columns: [`JOB_COLUMNS`]).
pub(crate) fn job(row: &dyn Columns) -> Result<JobRecord> {
    Ok(JobRecord {
        id: row.int("id")?,
        name: row.text("name")?,
        kind: row.text("kind")?,
        key: row.opt_text("job_key")?,
        state: row
            .text("state")?
            .parse()
            .map_err(|_| StoreError::Corrupt("jobs.state is unknown".into()))?,
        scopes: Scopes::parse(&row.text("scopes")?),
        rate: row.opt_int("rate_milli")?.map(|m| m as f64 / 1000.0),
        lease_secs: small(row, "lease_secs")?,
        min_ttl_secs: small(row, "min_ttl_secs")?,
        max_attempts: small(row, "max_attempts")?,
        total: u64::try_from(row.int("total")?)
            .map_err(|_| StoreError::Corrupt("jobs.total is negative".into()))?,
        created_by: row.text("created_by")?,
        created_at: secs(row, "created_at")?
            .ok_or_else(|| StoreError::Corrupt("jobs.created_at is missing".into()))?,
        finished_at: secs(row, "finished_at")?,
    })
}

/// Reads an item a claim leased, with its user's grant when there is one (columns: `id`, `sub`,
/// `attempts`, `grant_sub` and the grant's).
pub(crate) fn claimed_item(row: &dyn Columns) -> Result<ClaimedItem> {
    let sub = row.text("sub")?;
    let grant = match row.opt_text("grant_sub")? {
        Some(_) => Some(crate::rows::grant(row, sub.clone())?),
        None => None,
    };
    Ok(ClaimedItem {
        id: row.int("id")?,
        attempt: small(row, "attempts")?,
        sub,
        grant,
    })
}

fn settled_item(row: &dyn Columns) -> Result<SettledItem> {
    Ok(SettledItem {
        id: row.int("id")?,
        sub: row.text("sub")?,
        state: row
            .text("state")?
            .parse()
            .map_err(|_| StoreError::Corrupt("job_items.state is unknown".into()))?,
        reason: row.opt_text("reason")?,
        detail: row.opt_text("detail")?,
        at: secs(row, "settled_at")?,
    })
}

/// The statement that selects the items of a new job `$1` and inserts them, due from `$2` (ms)
/// spread over `$3` ms; the job's scopes are `$4`, `$5`, ...; `position` is the backend's
/// `instr`/`strpos`. Items of grants that cannot give a token are settled at once for
/// [`Selection::Holding`]; `$6`.. follow the scopes (the idle time for [`Selection::IdleSince`]).
pub(crate) fn insert_items(
    selection: &Selection,
    scopes: &Scopes,
    position: &str,
    at: OffsetDateTime,
) -> (Sql, Vec<Arg>) {
    // Arguments after the fixed three.
    let mut args: Vec<Arg> = Vec::new();
    let mut holds = String::new();
    for scope in scopes.iter() {
        args.push(Arg::from(scope.to_owned()));
        holds.push_str(&format!(
            " AND {position}(' ' || g.scopes || ' ', ' ' || ${} || ' ') > 0",
            3 + args.len()
        ));
    }
    let due =
        "$2 + CAST((ROW_NUMBER() OVER (ORDER BY s.sub) - 1) * $3 / COUNT(*) OVER () AS BIGINT)";
    let sql = match selection {
        Selection::Holding => {
            args.push(Arg::from(at));
            let now = 3 + args.len();
            format!(
                "INSERT INTO job_items (job_id, sub, state, available_ms, reason, detail, settled_at)
                 SELECT $1, s.sub, s.state, {due}, s.reason, s.detail,
                        CASE WHEN s.state = 'skipped' THEN ${now} END
                   FROM (SELECT g.sub,
                                CASE WHEN g.state = 'revoked' OR g.refresh_token IS NULL
                                       OR g.state NOT IN ('active', 'failing')
                                     THEN 'skipped' ELSE 'pending' END AS state,
                                CASE WHEN g.state = 'revoked' THEN 'revoked'
                                     WHEN g.refresh_token IS NULL
                                       OR g.state NOT IN ('active', 'failing')
                                     THEN 'needs_consent' END AS reason,
                                CASE WHEN g.state = 'revoked' THEN g.reason
                                     WHEN g.refresh_token IS NULL
                                       OR g.state NOT IN ('active', 'failing')
                                     THEN 'no refresh token is held: the user must consent again'
                                END AS detail
                           FROM grants g WHERE 1 = 1{holds}) s"
            )
        }
        Selection::Everyone => format!(
            "INSERT INTO job_items (job_id, sub, state, available_ms)
             SELECT $1, s.sub, 'pending', {due} FROM users s ORDER BY s.sub"
        ),
        Selection::IdleSince(since) => {
            args.push(Arg::from(*since));
            let idle = 3 + args.len();
            format!(
                "INSERT INTO job_items (job_id, sub, state, available_ms)
                 SELECT $1, s.sub, 'pending', {due}
                   FROM (SELECT g.sub FROM grants g
                          WHERE g.refresh_token IS NOT NULL
                            AND g.state IN ('active', 'failing')
                            AND COALESCE(g.last_refresh_at, g.refresh_token_received_at,
                                         g.updated_at) < ${idle}{holds}) s"
            )
        }
    };
    (sql.into(), args)
}

/// A new job's row (`$1`..`$12`); its id comes back.
pub(crate) const INSERT_JOB: &str =
    "INSERT INTO jobs (name, kind, job_key, state, scopes, rate_milli, slot_us, lease_secs,
                       min_ttl_secs, max_attempts, created_by, created_at)
     VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, $10, $11)
     RETURNING id";

pub(crate) fn job_args(job: &NewJob) -> Vec<Arg> {
    let rate_milli = job.rate.map(|r| (r * 1000.0).round() as i64);
    args![
        job.name.as_str(),
        job.kind.as_str(),
        job.key.clone(),
        job.scopes.to_string(),
        rate_milli,
        job.rate.map_or(0, slot_us),
        i64::from(job.lease_secs),
        i64::from(job.min_ttl_secs),
        i64::from(job.max_attempts),
        job.created_by.as_str(),
        job.at
    ]
}

/// A new job's total and open items, once its items are in (`$1` the job): the only time its
/// items are counted; from then on its counts change with them ([`tally`]).
pub(crate) const COUNT_TOTAL: &str =
    "UPDATE jobs SET total = (SELECT COUNT(*) FROM job_items WHERE job_id = $1),
                     open_items = (SELECT COUNT(*) FROM job_items
                                    WHERE job_id = $1 AND state IN ('pending', 'leased'))
      WHERE id = $1";

/// Moves the counts of job `$1` as items left the open ones: `$2` done, `$3` failed, `$4`
/// skipped. Run in the unit of work that settled them.
const TALLY: &str = "UPDATE jobs SET open_items = open_items - $2 - $3 - $4,
                         done_items = done_items + $2, failed_items = failed_items + $3
      WHERE id = $1";

/// The statement that keeps job `job_id`'s counts after items of it were settled as `counts`
/// say (retries that stayed open and releases change nothing); None when nothing moved.
pub(crate) fn tally(job_id: i64, counts: &SettleCounts) -> Option<(Sql, Vec<Arg>)> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (counts.done + counts.failed + counts.skipped > 0).then(|| {
        (
            TALLY.into(),
            args![job_id, n(counts.done), n(counts.failed), n(counts.skipped)],
        )
    })
}

/// Finishes job `$1` at `$2` (seconds) when it runs and no item of it is open.
pub(crate) const FINISH_IF_DONE: &str = "UPDATE jobs SET state = 'finished', finished_at = $2
      WHERE id = $1 AND state = 'running'
        AND NOT EXISTS (SELECT 1 FROM job_items
                         WHERE job_id = $1 AND state IN ('pending', 'leased'))";

pub(crate) const SELECT_JOB: &str = "SELECT id, name, kind, job_key, state, scopes, rate_milli, lease_secs, \
     min_ttl_secs, max_attempts, total, created_by, created_at, finished_at FROM jobs WHERE id = $1";

pub(crate) const SELECT_RUNNING_WITH_KEY: &str = "SELECT id, name, kind, job_key, state, scopes, rate_milli, lease_secs, \
     min_ttl_secs, max_attempts, total, created_by, created_at, finished_at \
     FROM jobs WHERE job_key = $1 AND state = 'running'";

/// Items of job `$1` whose lease ended by `$2` on their last offer: failed (`$3`: now, seconds).
pub(crate) const FAIL_EXHAUSTED: &str =
    "UPDATE job_items SET state = 'failed', reason = 'lease_expired', lease = NULL,
            detail = 'its lease ran out on every offer', settled_at = $3
      WHERE job_id = $1 AND state = 'leased' AND available_ms <= $2
        AND attempts >= (SELECT max_attempts FROM jobs WHERE id = $1)";

/// Leases up to `$3` due items of job `$1` (due by `$2`) as `$4` to `$5` until `$6`.
pub(crate) const LEASE_ITEMS: &str =
    "UPDATE job_items SET state = 'leased', lease = $4, owner = $5, available_ms = $6,
            attempts = attempts + 1
      WHERE id IN (SELECT id FROM job_items
                    WHERE job_id = $1 AND state IN ('pending', 'leased') AND available_ms <= $2
                    ORDER BY available_ms, id LIMIT $3)";

/// The items of lease `$1`, with their users' grants.
pub(crate) const SELECT_LEASED: &str = concat!(
    "SELECT i.id, i.sub, i.attempts, g.sub AS grant_sub, ",
    grant_columns!("g."),
    " FROM job_items i LEFT JOIN grants g ON g.sub = i.sub
      WHERE i.lease = $1 AND i.state = 'leased' ORDER BY i.available_ms, i.id"
);

/// When the next item of job `$1` may be due (ms), if any is open.
pub(crate) const NEXT_DUE: &str = "SELECT MIN(available_ms) FROM job_items
      WHERE job_id = $1 AND state IN ('pending', 'leased')";

/// The ids, among the report's, that lease `$2` of job `$1` holds at `$3`; `$4`.. the ids.
pub(crate) fn held_items(ids: usize, lock: &str) -> Sql {
    format!(
        "SELECT id FROM job_items WHERE job_id = $1 AND lease = $2 AND state = 'leased'
            AND available_ms > $3 AND id IN ({}){lock}",
        placeholders(4, ids)
    )
    .into()
}

/// `$from, $from+1, ...` for `n` values.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statements that settle items already known to be held (after [`held_items`]), in
/// order; the last finishes the job when nothing is left open. `max_attempts` decides whether a
/// retry is one too many. Each statement answers the rows it changed; those of retries that
/// failed come in `failed_retries` order ([`SettlePlan::retry_failed`]).
pub(crate) struct SettlePlan {
    pub statements: Vec<(Sql, Vec<Arg>)>,
    pub counts: SettleCounts,
    /// Indices into `statements` of the retries, which answer whether the item failed.
    pub retries: Vec<usize>,
}

/// Settles the items of one report once held: the statements, grouped (the items done in one
/// statement, the items released at one time in one), and the counts before retries are known.
pub(crate) fn settle_plan(
    job_id: i64,
    items: Vec<(i64, Settle)>,
    max_attempts: i64,
    now_ms: i64,
) -> SettlePlan {
    let now_s = now_ms.div_euclid(1000);
    let mut done = Vec::new();
    let mut released: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut plan = SettlePlan {
        statements: Vec::new(),
        counts: SettleCounts::default(),
        retries: Vec::new(),
    };
    for (id, settle) in items {
        match settle {
            Settle::Done => done.push(id),
            Settle::Release { at_ms } => released.entry(at_ms).or_default().push(id),
            Settle::Retry { at_ms, detail } => {
                plan.retries.push(plan.statements.len());
                plan.statements.push((
                    "UPDATE job_items SET
                        state = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'pending' END,
                        reason = CASE WHEN attempts >= $3 THEN 'attempts' END,
                        settled_at = CASE WHEN attempts >= $3 THEN $4 END,
                        available_ms = $5, detail = $6, lease = NULL
                      WHERE id = $1 AND job_id = $2 AND attempts >= $3"
                        .into(),
                    args![id, job_id, max_attempts, now_s, at_ms, detail.clone()],
                ));
                plan.statements.push((
                    "UPDATE job_items SET state = 'pending', available_ms = $3, detail = $4,
                            lease = NULL
                      WHERE id = $1 AND job_id = $2 AND state = 'leased'"
                        .into(),
                    args![id, job_id, at_ms, detail],
                ));
            }
            Settle::Failed { reason, detail } => {
                plan.counts.failed += 1;
                plan.statements
                    .push(settle_as("failed", id, job_id, reason, detail, now_s));
            }
            Settle::Skipped { reason, detail } => {
                plan.counts.skipped += 1;
                plan.statements
                    .push(settle_as("skipped", id, job_id, reason, detail, now_s));
            }
        }
    }
    if !done.is_empty() {
        plan.counts.done = done.len() as u64;
        let mut args = args![job_id, now_s];
        args.extend(done.iter().map(|id| Arg::from(*id)));
        plan.statements.push((
            format!(
                "UPDATE job_items SET state = 'done', settled_at = $2, detail = NULL, lease = NULL
                  WHERE job_id = $1 AND id IN ({})",
                placeholders(3, done.len())
            )
            .into(),
            args,
        ));
    }
    for (at_ms, ids) in released {
        plan.counts.released += ids.len() as u64;
        let mut args = args![job_id, at_ms];
        args.extend(ids.iter().map(|id| Arg::from(*id)));
        plan.statements.push((
            format!(
                "UPDATE job_items SET state = 'pending', available_ms = $2, lease = NULL,
                        owner = NULL, attempts = attempts - 1
                  WHERE job_id = $1 AND id IN ({})",
                placeholders(3, ids.len())
            )
            .into(),
            args,
        ));
    }
    plan.statements
        .push((FINISH_IF_DONE.into(), args![job_id, now_s]));
    plan
}

/// The reasons a claim skips for: the grant cannot give a token.
pub const SKIP_REASONS: [&str; 5] = [
    "revoked",
    "needs_consent",
    "scope_not_granted",
    "invalid_grant",
    "deleted",
];

fn settle_as(
    state: &'static str,
    id: i64,
    job_id: i64,
    reason: String,
    detail: Option<String>,
    now_s: i64,
) -> (Sql, Vec<Arg>) {
    (
        "UPDATE job_items SET state = $3, reason = $4, detail = $5, settled_at = $6, lease = NULL
          WHERE id = $1 AND job_id = $2"
            .into(),
        args![id, job_id, state, reason, detail, now_s],
    )
}

/// Adds the retries' outcome to the plan's counts: each retry ran two statements, the first
/// of which changed its row only when the retry was one too many (the item failed).
pub(crate) fn count_retries(plan: &SettlePlan, changed: &[u64]) -> SettleCounts {
    let mut counts = plan.counts;
    for &at in &plan.retries {
        if changed.get(at).copied().unwrap_or(0) > 0 {
            counts.failed += 1;
        } else {
            counts.retry += 1;
        }
    }
    counts
}

/// The units of work of several statements of jobs, which each backend runs its own way.
#[async_trait]
pub(crate) trait JobUnits: Engine {
    /// The backend's `position(haystack, needle)` function: `instr` or `strpos`.
    const POSITION: &'static str;
    async fn create_job_unit(&self, job: NewJob, join: bool) -> Result<(JobRecord, bool)>;
    async fn claim_unit(&self, claim: ItemClaim) -> Result<ClaimedItems>;
    async fn settle_unit(
        &self,
        job_id: i64,
        lease: String,
        items: Vec<(i64, Settle)>,
        now_ms: i64,
    ) -> Result<SettleCounts>;
}

#[async_trait]
impl<E: JobUnits> JobStore for E {
    async fn create_job(&self, job: NewJob) -> Result<JobRecord> {
        Ok(self.create_job_unit(job, false).await?.0)
    }

    async fn create_or_join_job(&self, job: NewJob) -> Result<(JobRecord, bool)> {
        if job.key.is_none() {
            return Ok((self.create_job_unit(job, false).await?.0, true));
        }
        self.create_job_unit(job, true).await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        Ok(first(
            self.read_rows(SELECT_JOB.into(), args![id], job).await?,
        ))
    }

    async fn list_jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<JobRecord>> {
        let limit = i64::from(page_limit(limit));
        match state {
            None => {
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT $1");
                self.read_rows(sql.into(), args![limit], job).await
            }
            Some(state) => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = $2 ORDER BY id DESC LIMIT $1"
                );
                self.read_rows(sql.into(), args![limit, state.as_str()], job)
                    .await
            }
        }
    }

    async fn latest_job_with_key(&self, key: &str) -> Result<Option<JobRecord>> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_key = $1 ORDER BY id DESC LIMIT 1");
        Ok(first(self.read_rows(sql.into(), args![key], job).await?))
    }

    async fn job_counts(&self, id: i64, now_ms: i64) -> Result<JobCounts> {
        // The job's row keeps its open, done and failed items; what is counted here is small
        // and read through indexes: the leases running (of the leased items), the skipped
        // items by reason, the items settled in the last minute.
        let since = now_ms.div_euclid(1000) - 60;
        let sql = "SELECT open_items, done_items, failed_items,
                          (SELECT CAST(COUNT(*) AS BIGINT) FROM job_items
                            WHERE job_id = $1 AND state = 'leased' AND available_ms > $2)
                              AS in_flight,
                          (SELECT CAST(COUNT(*) AS BIGINT) FROM job_items
                            WHERE job_id = $1 AND settled_at >= $3) AS recent
                     FROM jobs WHERE id = $1";
        let found = self
            .read_rows(sql.into(), args![id, now_ms, since], |row| {
                let count = |column: &'static str| {
                    u64::try_from(row.int(column)?)
                        .map_err(|_| StoreError::Corrupt(format!("jobs.{column} is negative")))
                };
                Ok((
                    count("open_items")?,
                    count("done_items")?,
                    count("failed_items")?,
                    count("in_flight")?,
                    count("recent")?,
                ))
            })
            .await?;
        let Some((open, done, failed, in_flight, recent)) = first(found) else {
            return Ok(JobCounts::default());
        };
        let skips = self
            .read_rows(
                "SELECT reason, CAST(COUNT(*) AS BIGINT) AS n FROM job_items
                  WHERE job_id = $1 AND state = 'skipped' GROUP BY reason"
                    .into(),
                args![id],
                |row| {
                    Ok((
                        row.opt_text("reason")?,
                        u64::try_from(row.int("n")?).unwrap_or(0),
                    ))
                },
            )
            .await?;
        let mut counts = JobCounts {
            pending: open.saturating_sub(in_flight),
            in_flight: in_flight.min(open),
            done,
            failed,
            settled_last_minute: recent,
            ..JobCounts::default()
        };
        for (reason, n) in skips {
            *counts
                .skipped
                .entry(reason.unwrap_or_else(|| "skipped".to_owned()))
                .or_default() += n;
        }
        Ok(counts)
    }

    async fn settled_through(&self, id: i64) -> Result<SubProgress> {
        let first_open = first(
            self.read_rows(
                "SELECT MIN(sub) AS sub FROM job_items
                  WHERE job_id = $1 AND state IN ('pending', 'leased')"
                    .into(),
                args![id],
                |row| row.opt_text("sub"),
            )
            .await?,
        )
        .flatten();
        let settled = "SELECT MAX(sub) AS sub FROM job_items
                        WHERE job_id = $1 AND state IN ('done', 'failed', 'skipped')";
        let through = match &first_open {
            Some(open) => {
                let sql = format!("{settled} AND sub < $2");
                self.read_rows(sql.into(), args![id, open.as_str()], |row| {
                    row.opt_text("sub")
                })
                .await?
            }
            None => {
                self.read_rows(settled.into(), args![id], |row| row.opt_text("sub"))
                    .await?
            }
        };
        Ok(SubProgress {
            first_open,
            settled_through: first(through).flatten(),
        })
    }

    async fn job_failures(&self, id: i64, limit: u32) -> Result<Vec<SettledItem>> {
        let sql = "SELECT id, sub, state, reason, detail, settled_at FROM job_items
                    WHERE job_id = $1 AND state IN ('failed', 'skipped')
                    ORDER BY settled_at DESC, id DESC LIMIT $2";
        self.read_rows(
            sql.into(),
            args![id, i64::from(page_limit(limit))],
            settled_item,
        )
        .await
    }

    async fn claim_items(&self, claim: ItemClaim) -> Result<ClaimedItems> {
        self.claim_unit(claim).await
    }

    async fn settle_items(
        &self,
        job_id: i64,
        lease: &str,
        items: Vec<(i64, Settle)>,
        now_ms: i64,
    ) -> Result<SettleCounts> {
        if items.is_empty() {
            return Ok(SettleCounts::default());
        }
        self.settle_unit(job_id, lease.to_owned(), items, now_ms)
            .await
    }

    async fn renew_items(
        &self,
        job_id: i64,
        lease: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<u64> {
        let sql = "UPDATE job_items SET available_ms = $3
                    WHERE job_id = $1 AND lease = $2 AND state = 'leased' AND available_ms > $4";
        self.execute(sql.into(), args![job_id, lease, until_ms, now_ms])
            .await
    }

    async fn take_refresh_slots(
        &self,
        job_id: i64,
        want: u32,
        now_us: i64,
        horizon_us: i64,
    ) -> Result<Slots> {
        // Every SET expression reads the row as it was: the first free slot `start` (the next
        // one not before now, on the grid) and the number taken `k` are computed alike in both.
        let grid = "((($2 + slot_us - 1) / slot_us) * slot_us)";
        let start = format!("(CASE WHEN next_slot_us > {grid} THEN next_slot_us ELSE {grid} END)");
        let fit = format!("((($2 + $3) - {start}) / slot_us + 1)");
        let k =
            format!("(CASE WHEN {start} > $2 + $3 THEN 0 WHEN {fit} < $4 THEN {fit} ELSE $4 END)");
        let sql = format!(
            "UPDATE jobs SET slots_taken = {k}, next_slot_us = {start} + slot_us * {k}
              WHERE id = $1 AND slot_us > 0
             RETURNING next_slot_us, slots_taken, slot_us"
        );
        let taken = self
            .write_rows(
                sql.into(),
                args![job_id, now_us, horizon_us, i64::from(want)],
                |row| {
                    Ok((
                        row.int("next_slot_us")?,
                        row.int("slots_taken")?,
                        row.int("slot_us")?,
                    ))
                },
            )
            .await?;
        let (next, granted, slot_us) = first(taken).ok_or(StoreError::NotFound)?;
        Ok(Slots {
            first_us: next - slot_us * granted,
            slot_us,
            granted: u32::try_from(granted).unwrap_or(0),
        })
    }

    async fn cancel_job(&self, id: i64, at: OffsetDateTime) -> Result<JobRecord> {
        self.execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = $2 WHERE id = $1 AND state = 'running'"
                .into(),
            args![id, at],
        )
        .await?;
        self.job(id).await?.ok_or(StoreError::NotFound)
    }
}
