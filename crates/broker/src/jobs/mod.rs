//! The job engine: bulk work over users, handed out in leased batches with fresh tokens, at a
//! rate of refreshes the provider accepts. One module of domain operations ([`Jobs::create`],
//! [`Jobs::claim`], [`Jobs::report`], [`Jobs::progress`], [`Jobs::cancel`]) that `/v1/jobs`,
//! the sweeps, keep-alive and `jobs run` all call; [`worker`] works on a job inside this
//! process.
//!
//! Owns: what a job may ask (its bounds), what a claim hands out (only users whose grant gives
//! a token valid for the job's `min_ttl`; a token already fresh enough costs no refresh and no
//! rate; the others are refreshed through the broker, single flight and all, each in a refresh
//! slot of the job taken in the store, so that every instance together starts at most the job's
//! rate a second), what a claim skips (grants revoked, needing consent, missing a scope, users
//! gone) and what it gives back (Google unavailable: offered again after its `Retry-After`; no
//! slot left in the next second: offered again at the job's next free one), and a job's
//! progress (its rate and the estimate of its end).
//!
//! Leaves to others: leases, items and slots as records (the store), HTTP (the server), what a
//! worker does for a user.

pub mod worker;

use crate::{AccessToken, Broker, BrokerError, TokenRequest};
use grantkeeper_core::{GrantState, Scopes, SharedClock};
use grantkeeper_store::{
    ClaimedItem, ItemClaim, ItemState, JobCounts, JobRecord, JobState, JobsStore, NewJob,
    Selection, Settle, SettleCounts, SettledItem, StoreError,
};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Most users one claim may ask for.
pub const MAX_CLAIM: u32 = 500;
/// Longest lease, and longest retry delay.
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);
/// Longest `min_ttl`: Google's access tokens live an hour.
pub const MAX_MIN_TTL: Duration = Duration::from_secs(3600);
/// Most items one report may settle.
pub const MAX_REPORT: usize = 1000;
/// Longest failure detail kept.
pub const MAX_DETAIL: usize = 500;
/// Longest job name.
pub const MAX_NAME: usize = 100;
/// The bounds of a job's rate, refreshes a second.
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.01..=1000.0;
/// Defaults of a job made through the API.
pub const DEFAULT_RATE: f64 = 10.0;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const MAX_ATTEMPTS: u32 = 100;
/// A retry without a delay waits this long.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(60);
/// How far ahead a claim takes refresh slots: its caller waits at most this long for them.
const SLOT_HORIZON: Duration = Duration::from_secs(1);
/// Failures a job's detail shows.
pub const FAILURES_SHOWN: u32 = 20;

/// Who a job is for, which decides how a claim hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Made through `/v1/jobs`.
    Api,
    /// `sweep --job refresh`.
    SweepRefresh,
    /// `sweep --job drive-appdata`.
    SweepDriveAppdata,
    /// `serve`'s keep-alive.
    KeepAlive,
    /// `jobs run`.
    Run,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Api,
        Kind::SweepRefresh,
        Kind::SweepDriveAppdata,
        Kind::KeepAlive,
        Kind::Run,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::SweepRefresh => "sweep:refresh",
            Kind::SweepDriveAppdata => "sweep:drive-appdata",
            Kind::KeepAlive => "keepalive",
            Kind::Run => "run",
        }
    }

    /// Whether each user's grant is refreshed whatever its token (a refresh is the point: it
    /// is a use of the refresh token), rather than handed the token on hand when it is fresh.
    fn always_refreshes(self) -> bool {
        matches!(self, Kind::SweepRefresh | Kind::KeepAlive)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind {s:?}"))
    }
}

/// Why a job operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    /// Bad input, in words for the caller.
    #[error("{0}")]
    Invalid(String),
    /// A report named an item this lease does not hold: nothing changed.
    #[error(
        "an item of this report is not held by this lease: its lease ran out, another worker holds it, or it is settled"
    )]
    NotHeld,
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => JobError::NotFound,
            StoreError::Conflict => JobError::NotHeld,
            other => JobError::Store(other),
        }
    }
}

/// A job to make.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub name: String,
    pub kind: Kind,
    pub key: Option<String>,
    pub scopes: Scopes,
    pub selection: Selection,
    /// Refreshes a second at most, across every instance; None: no limit (grantkeeper's own
    /// jobs run without one when the operator asks so; an API job always has one).
    pub rate: Option<f64>,
    pub lease: Duration,
    pub min_ttl: Duration,
    pub max_attempts: u32,
    /// Items due one after another over this time from now.
    pub spread: Duration,
}

impl JobSpec {
    /// A job of the API, with its defaults.
    pub fn api(name: impl Into<String>) -> JobSpec {
        JobSpec {
            name: name.into(),
            kind: Kind::Api,
            key: None,
            scopes: Scopes::default(),
            selection: Selection::Holding,
            rate: Some(DEFAULT_RATE),
            lease: DEFAULT_LEASE,
            min_ttl: DEFAULT_MIN_TTL,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            spread: Duration::ZERO,
        }
    }

    /// Refuses what cannot work, in the contract's words.
    pub fn check(&self) -> Result<(), JobError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(JobError::Invalid(format!(
                "name must be 1 to {MAX_NAME} characters"
            )));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && RATE_RANGE.contains(&rate))
        {
            return Err(JobError::Invalid(format!(
                "rate must be {} to {} refreshes a second",
                RATE_RANGE.start(),
                RATE_RANGE.end()
            )));
        }
        if self.lease.is_zero() || self.lease > MAX_LEASE {
            return Err(JobError::Invalid(format!(
                "lease must be 1 to {} seconds",
                MAX_LEASE.as_secs()
            )));
        }
        if self.min_ttl > MAX_MIN_TTL {
            return Err(JobError::Invalid(format!(
                "min_ttl must be 0 to {} seconds",
                MAX_MIN_TTL.as_secs()
            )));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(JobError::Invalid(format!(
                "max_attempts must be 1 to {MAX_ATTEMPTS}"
            )));
        }
        Ok(())
    }
}

/// A job with how its items stand.
#[derive(Clone, Debug)]
pub struct JobView {
    pub job: JobRecord,
    pub counts: JobCounts,
    /// Items settled a second, over the last minute (or the job's life when shorter).
    pub rate: f64,
    /// When the items not settled would be, at that rate; None when unknown or ended.
    pub eta: Option<OffsetDateTime>,
}

impl JobView {
    pub fn kind(&self) -> Option<Kind> {
        self.job.kind.parse().ok()
    }
}

/// A job with its last failures.
#[derive(Clone, Debug)]
pub struct JobDetail {
    pub view: JobView,
    pub failures: Vec<SettledItem>,
}

/// What a claim asks for.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub max: u32,
    /// None: the job's lease.
    pub lease: Option<Duration>,
    /// A name for people (the holder of items in logs).
    pub worker: Option<String>,
}

/// A user handed out: leased to the claim, with a token valid for the job's `min_ttl`.
#[derive(Clone, Debug)]
pub struct HandedOut {
    pub id: i64,
    pub sub: String,
    pub attempt: u32,
    pub token: Arc<AccessToken>,
}

/// A user a claim settled itself rather than hand out (skipped, or failed on its last offer).
#[derive(Clone, Debug)]
pub struct SettledAtClaim {
    pub sub: String,
    pub state: ItemState,
    pub reason: String,
    pub detail: String,
}

/// A user handed out without a token by [`Jobs::claim_unrefreshed`]: leased to the claim, its
/// refresh slot taken; [`Jobs::refresh_handed`] refreshes it.
#[derive(Clone, Debug)]
pub struct ToRefresh {
    pub id: i64,
    pub sub: String,
    pub attempt: u32,
    /// When its refresh may start (its slot of the job's rate; the claim's time without a
    /// rate), in microseconds of the clock.
    slot_us: i64,
    /// Refreshed whatever the token on hand (the job's kind refreshes every user).
    always: bool,
    request: TokenRequest,
    /// The claim found that the grant cannot give a token: skipped when the caller comes to
    /// it (given back, if it never does, as the users after it are).
    skip: Option<RefreshFailed>,
}

/// Why [`Jobs::refresh_handed`] brought no token, as the user is to be settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshFailed {
    /// The grant cannot give tokens: `reason` is one of the skip reasons.
    Skip { reason: String, detail: String },
    /// Offer the user again after this delay.
    Retry { after: Duration, detail: String },
}

/// What a claim got.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Names the claim: reports carry it.
    pub lease: String,
    pub lease_until: OffsetDateTime,
    pub items: Vec<HandedOut>,
    /// The users handed out to be refreshed by the caller ([`Jobs::claim_unrefreshed`] only).
    pub to_refresh: Vec<ToRefresh>,
    pub settled: Vec<SettledAtClaim>,
    /// For an empty batch of a running job: how long until an item may be due.
    pub retry_after: Option<Duration>,
    pub job: JobRecord,
}

/// What a worker says of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Done,
    /// Offer it again after `delay` (None: [`DEFAULT_RETRY`]).
    Retry {
        delay: Option<Duration>,
        detail: Option<String>,
    },
    Failed {
        detail: Option<String>,
    },
    /// Give it back unworked (a worker stopping): offered again at once, before the users
    /// not offered yet, its attempt not counted. Not offered over HTTP.
    Release,
    /// The user's grant cannot serve the work, as a claim would have found (a sweep's API call
    /// met a grant revoked meanwhile): `reason` is one of the skip reasons. Not offered over
    /// HTTP.
    Skipped {
        reason: String,
        detail: Option<String>,
    },
}

/// What a report did.
#[derive(Clone, Debug)]
pub struct ReportSummary {
    pub counts: SettleCounts,
    pub job: JobRecord,
}

/// The job engine. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    broker: Broker,
    store: Arc<dyn JobsStore>,
    clock: SharedClock,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// What became of a claimed item while the claim handed out.
enum Fate {
    Token(Arc<AccessToken>),
    /// Handed out to be refreshed by the caller, from this slot on.
    Refresh {
        slot_us: i64,
    },
    Settle(Settle),
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn us(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Keeps at most [`MAX_DETAIL`] characters.
pub fn clip(detail: &str) -> String {
    detail.trim().chars().take(MAX_DETAIL).collect()
}

impl Jobs {
    pub fn new(broker: Broker, store: Arc<dyn JobsStore>) -> Jobs {
        let clock = broker.inner.clock.clone();
        Jobs {
            broker,
            store,
            clock,
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Makes a job and its items. `by` is who asks (an API key's id, `cli`, `serve`).
    pub async fn create(&self, spec: JobSpec, by: &str) -> Result<JobView, JobError> {
        spec.check()?;
        let job = self.store.create_job(self.new_job(spec, by)).await?;
        self.view(job).await
    }

    /// The running job with the spec's key, or a new one; true when made.
    pub async fn create_or_join(
        &self,
        spec: JobSpec,
        by: &str,
    ) -> Result<(JobView, bool), JobError> {
        spec.check()?;
        let (job, made) = self
            .store
            .create_or_join_job(self.new_job(spec, by))
            .await?;
        Ok((self.view(job).await?, made))
    }

    fn new_job(&self, spec: JobSpec, by: &str) -> NewJob {
        NewJob {
            name: spec.name.trim().to_owned(),
            kind: spec.kind.as_str().to_owned(),
            key: spec.key,
            scopes: spec.scopes,
            selection: spec.selection,
            rate: spec.rate,
            lease_secs: u32::try_from(spec.lease.as_secs()).unwrap_or(u32::MAX),
            min_ttl_secs: u32::try_from(spec.min_ttl.as_secs()).unwrap_or(u32::MAX),
            max_attempts: spec.max_attempts,
            spread_secs: spec.spread.as_secs(),
            created_by: by.to_owned(),
            at: self.clock.now(),
        }
    }

    /// A job and how its items stand.
    pub async fn progress(&self, id: i64) -> Result<JobView, JobError> {
        let job = self.store.job(id).await?.ok_or(JobError::NotFound)?;
        self.view(job).await
    }

    /// A job, how its items stand, and its last failures.
    pub async fn detail(&self, id: i64) -> Result<JobDetail, JobError> {
        let view = self.progress(id).await?;
        let failures = self.store.job_failures(id, FAILURES_SHOWN).await?;
        Ok(JobDetail { view, failures })
    }

    /// Jobs newest first.
    pub async fn list(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobView>, JobError> {
        let jobs = self.store.list_jobs(state, limit).await?;
        let mut views = Vec::with_capacity(jobs.len());
        for job in jobs {
            views.push(self.view(job).await?);
        }
        Ok(views)
    }

    /// A job's state alone (one row read): what a worker checks before starting users.
    pub async fn state(&self, id: i64) -> Result<JobState, JobError> {
        Ok(self.store.job(id).await?.ok_or(JobError::NotFound)?.state)
    }

    /// Cancels a running job: nothing more is handed out.
    pub async fn cancel(&self, id: i64) -> Result<JobView, JobError> {
        let job = self.store.cancel_job(id, self.clock.now()).await?;
        tracing::info!(job = id, name = %job.name, "job cancelled");
        self.view(job).await
    }

    async fn view(&self, job: JobRecord) -> Result<JobView, JobError> {
        let now = self.clock.now();
        let counts = self.store.job_counts(job.id, ms(now)).await?;
        let age = (now - job.created_at).as_seconds_f64().max(1.0);
        let rate = counts.settled_last_minute as f64 / age.min(60.0);
        let open = counts.pending + counts.in_flight;
        let eta = (job.state == JobState::Running && rate > 0.0)
            .then(|| now + time::Duration::seconds_f64((open as f64 / rate).min(1e9)));
        Ok(JobView {
            job,
            counts,
            rate,
            eta,
        })
    }

    /// Leases up to `req.max` users of a running job to the caller, each with a fresh token.
    pub async fn claim(&self, id: i64, req: ClaimRequest) -> Result<Batch, JobError> {
        self.claim_with(id, req, false).await
    }

    /// As [`Jobs::claim`], taking refresh slots alike, but the users are handed out unrefreshed
    /// (in [`Batch::to_refresh`]) for the caller to refresh each with [`Jobs::refresh_handed`]
    /// when it starts on it, the users to skip among them (settled skipped by that call): a
    /// claim answers at once and settles nothing of its users, so a caller may claim ahead of
    /// its work and give back what it did not start, the run's order kept.
    pub async fn claim_unrefreshed(&self, id: i64, req: ClaimRequest) -> Result<Batch, JobError> {
        self.claim_with(id, req, true).await
    }

    /// Refreshes a user handed out by [`Jobs::claim_unrefreshed`], not before its slot of the
    /// job's rate, through the broker (single flight and all).
    pub async fn refresh_handed(&self, item: &ToRefresh) -> Result<HandedOut, RefreshFailed> {
        if let Some(skip) = &item.skip {
            return Err(skip.clone());
        }
        let wait = item.slot_us.saturating_sub(us(self.clock.now()));
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(u64::try_from(wait).unwrap_or(0))).await;
        }
        let answer = if item.always {
            self.broker.refresh_now(&item.sub).await.map(Arc::new)
        } else {
            self.broker.access_token(&item.sub, &item.request).await
        };
        match answer {
            Ok(token) => Ok(HandedOut {
                id: item.id,
                sub: item.sub.clone(),
                attempt: item.attempt,
                token,
            }),
            Err(e) => Err(refresh_failure(&e)),
        }
    }

    async fn claim_with(
        &self,
        id: i64,
        req: ClaimRequest,
        unrefreshed: bool,
    ) -> Result<Batch, JobError> {
        if !(1..=MAX_CLAIM).contains(&req.max) {
            return Err(JobError::Invalid(format!("max must be 1 to {MAX_CLAIM}")));
        }
        if let Some(lease) = req.lease
            && (lease.is_zero() || lease > MAX_LEASE)
        {
            return Err(JobError::Invalid(format!(
                "lease must be 1 to {} seconds",
                MAX_LEASE.as_secs()
            )));
        }
        let job = self.store.job(id).await?.ok_or(JobError::NotFound)?;
        let lease_for = req
            .lease
            .unwrap_or(Duration::from_secs(u64::from(job.lease_secs)));
        let now = self.clock.now();
        let lease = grantkeeper_core::random::token::<16>();
        let lease_until_ms = ms(now).saturating_add(dur_ms(lease_for));
        let claimed = self
            .store
            .claim_items(ItemClaim {
                job_id: id,
                lease: lease.clone(),
                owner: req
                    .worker
                    .as_deref()
                    .map(clip)
                    .unwrap_or_else(|| "worker".to_owned()),
                max: req.max,
                now_ms: ms(now),
                lease_until_ms,
            })
            .await?;
        let lease_until = from_ms(lease_until_ms);
        if claimed.items.is_empty() {
            let retry_after = match (job.state, claimed.next_due_ms) {
                (JobState::Running, Some(due)) => Some(Duration::from_millis(
                    u64::try_from(due.saturating_sub(ms(now))).unwrap_or(0),
                )),
                _ => None,
            };
            return Ok(Batch {
                lease,
                lease_until,
                items: Vec::new(),
                to_refresh: Vec::new(),
                settled: Vec::new(),
                retry_after,
                job,
            });
        }
        // The claim's order (earliest due, then the job's order), kept for the users handed out
        // unrefreshed: their caller starts them in it, and gives back what it did not start.
        let order: std::collections::HashMap<i64, usize> = claimed
            .items
            .iter()
            .enumerate()
            .map(|(n, item)| (item.id, n))
            .collect();
        let fates = self
            .hand_out(
                &job,
                claimed.items,
                lease_for.min(SLOT_HORIZON),
                unrefreshed,
            )
            .await?;
        let mut items = Vec::new();
        let mut to_refresh = Vec::new();
        let kind = job.kind.parse::<Kind>().unwrap_or(Kind::Api);
        let request = token_request(&job);
        let mut settles = Vec::new();
        let mut settled = Vec::new();
        for (item, fate) in fates {
            match fate {
                Fate::Token(token) => items.push(HandedOut {
                    id: item.id,
                    sub: item.sub,
                    attempt: item.attempt,
                    token,
                }),
                Fate::Refresh { slot_us } => to_refresh.push(ToRefresh {
                    id: item.id,
                    sub: item.sub,
                    attempt: item.attempt,
                    slot_us,
                    always: kind.always_refreshes(),
                    request: request.clone(),
                    skip: None,
                }),
                Fate::Settle(Settle::Skipped { reason, detail }) if unrefreshed => {
                    to_refresh.push(ToRefresh {
                        id: item.id,
                        sub: item.sub,
                        attempt: item.attempt,
                        slot_us: 0,
                        always: kind.always_refreshes(),
                        request: request.clone(),
                        skip: Some(RefreshFailed::Skip {
                            reason,
                            detail: detail.unwrap_or_default(),
                        }),
                    });
                }
                Fate::Settle(settle) => {
                    if let Some(s) = settled_at_claim(&item, &settle, job.max_attempts) {
                        settled.push(s);
                    }
                    settles.push((item.id, settle));
                }
            }
        }
        to_refresh.sort_by_key(|item| order.get(&item.id).copied().unwrap_or(usize::MAX));
        if !settles.is_empty() {
            match self
                .store
                .settle_items(id, &lease, settles, ms(self.clock.now()))
                .await
            {
                Ok(_) => {}
                // The claim outlived its own lease (a slow store): another claim has them now.
                Err(StoreError::Conflict) => settled.clear(),
                Err(e) => return Err(e.into()),
            }
        }
        tracing::debug!(
            job = id,
            handed_out = items.len() + to_refresh.len(),
            settled = settled.len(),
            "claimed a batch"
        );
        Ok(Batch {
            lease,
            lease_until,
            items,
            to_refresh,
            settled,
            retry_after: None,
            job,
        })
    }

    /// Decides each claimed item: a token on hand, a refresh in one of the job's slots (done
    /// here, or `unrefreshed`, left to the caller), or settled (skipped, offered again later).
    async fn hand_out(
        &self,
        job: &JobRecord,
        claimed: Vec<ClaimedItem>,
        horizon: Duration,
        unrefreshed: bool,
    ) -> Result<Vec<(ClaimedItem, Fate)>, JobError> {
        let kind = job.kind.parse::<Kind>().unwrap_or(Kind::Api);
        let request = token_request(job);
        let mut decided = Vec::with_capacity(claimed.len());
        let mut to_refresh = Vec::new();
        for item in claimed {
            let Some(grant) = &item.grant else {
                decided.push((item, skip("deleted", "the user was deleted")));
                continue;
            };
            if grant.state == GrantState::Revoked {
                let why = grant.reason.clone().unwrap_or_else(|| "revoked".to_owned());
                decided.push((item, skip("revoked", &why)));
                continue;
            }
            if grant.needs_consent() {
                decided.push((
                    item,
                    skip(
                        "needs_consent",
                        "no refresh token is held: the user must consent again",
                    ),
                ));
                continue;
            }
            let missing = grant.scopes.missing(&job.scopes);
            if !missing.is_empty() {
                decided.push((
                    item,
                    skip("scope_not_granted", &format!("not granted: {missing}")),
                ));
                continue;
            }
            if !kind.always_refreshes()
                && let Some(token) = self.broker.token_on_hand(grant, &request).await
            {
                decided.push((item, Fate::Token(token)));
                continue;
            }
            to_refresh.push(item);
        }
        if to_refresh.is_empty() {
            return Ok(decided);
        }

        // The job's slots for these refreshes: the next free ones within the horizon.
        let now = self.clock.now();
        let wanted = u32::try_from(to_refresh.len()).unwrap_or(u32::MAX);
        let (first_us, slot_us, granted) = match job.rate {
            Some(_) => {
                let slots = self
                    .store
                    .take_refresh_slots(
                        job.id,
                        wanted,
                        us(now),
                        i64::try_from(horizon.as_micros()).unwrap_or(i64::MAX),
                    )
                    .await?;
                (slots.first_us, slots.slot_us, slots.granted)
            }
            None => (us(now), 0, wanted),
        };
        let later =
            from_us_to_ms(first_us.saturating_add(slot_us.saturating_mul(i64::from(granted))));
        let mut tasks = tokio::task::JoinSet::new();
        for (n, item) in to_refresh.into_iter().enumerate() {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            if n >= granted {
                // No slot of the job's rate in the next moments: not this batch's.
                decided.push((item, Fate::Settle(Settle::Release { at_ms: later })));
                continue;
            }
            let slot = first_us.saturating_add(slot_us.saturating_mul(i64::from(n)));
            if unrefreshed {
                decided.push((item, Fate::Refresh { slot_us: slot }));
                continue;
            }
            let (broker, clock, request) =
                (self.broker.clone(), self.clock.clone(), request.clone());
            tasks.spawn(async move {
                let wait = slot.saturating_sub(us(clock.now()));
                if wait > 0 {
                    tokio::time::sleep(Duration::from_micros(u64::try_from(wait).unwrap_or(0)))
                        .await;
                }
                let answer = if kind.always_refreshes() {
                    broker.refresh_now(&item.sub).await.map(Arc::new)
                } else {
                    broker.access_token(&item.sub, &request).await
                };
                let fate = match answer {
                    Ok(token) => Fate::Token(token),
                    Err(e) => refresh_failed(&e, &clock),
                };
                (item, fate)
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(pair) => decided.push(pair),
                Err(e) => {
                    // A refresh task that panicked or was cancelled: its item's lease runs out
                    // and it is offered again.
                    tracing::error!(error = %e, "a job's refresh task ended abnormally");
                }
            }
        }
        Ok(decided)
    }

    /// Settles items of one claim; all or none ([`JobError::NotHeld`]).
    pub async fn report(
        &self,
        id: i64,
        lease: &str,
        reports: Vec<(i64, Report)>,
    ) -> Result<ReportSummary, JobError> {
        if reports.is_empty() || reports.len() > MAX_REPORT {
            return Err(JobError::Invalid(format!(
                "items must name 1 to {MAX_REPORT} items"
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(reports.len());
        if let Some((dup, _)) = reports.iter().find(|(item, _)| !seen.insert(*item)) {
            return Err(JobError::Invalid(format!(
                "item {dup} is named twice in this report"
            )));
        }
        let now = self.clock.now();
        let mut settles = Vec::with_capacity(reports.len());
        for (item, report) in reports {
            let settle = match report {
                Report::Done => Settle::Done,
                Report::Retry { delay, detail } => {
                    let delay = delay.unwrap_or(DEFAULT_RETRY);
                    if delay > MAX_LEASE {
                        return Err(JobError::Invalid(format!(
                            "delay must be 0 to {} seconds",
                            MAX_LEASE.as_secs()
                        )));
                    }
                    Settle::Retry {
                        at_ms: ms(now).saturating_add(dur_ms(delay)),
                        detail: detail.as_deref().map(clip),
                    }
                }
                Report::Failed { detail } => Settle::Failed {
                    reason: "worker".to_owned(),
                    detail: detail.as_deref().map(clip),
                },
                // Due since ever: taken before the users not offered yet, so that the job
                // goes on where it stood.
                Report::Release => Settle::Release { at_ms: 0 },
                Report::Skipped { reason, detail } => Settle::Skipped {
                    reason,
                    detail: detail.as_deref().map(clip),
                },
            };
            settles.push((item, settle));
        }
        let counts = self
            .store
            .settle_items(id, lease, settles, ms(now))
            .await
            .map_err(|e| match e {
                // Settling names the job first: an unknown job is not a lease lost.
                StoreError::NotFound => JobError::NotFound,
                other => other.into(),
            })?;
        let job = self.store.job(id).await?.ok_or(JobError::NotFound)?;
        if job.state == JobState::Finished
            && job
                .finished_at
                .is_some_and(|at| at >= now - time::Duration::SECOND)
        {
            tracing::info!(job = id, name = %job.name, "job finished");
        }
        Ok(ReportSummary { counts, job })
    }

    /// Extends the lease of a claim's items still held (a worker whose users take long).
    pub async fn renew(&self, id: i64, lease: &str, lease_for: Duration) -> Result<u64, JobError> {
        let now = ms(self.clock.now());
        Ok(self
            .store
            .renew_items(id, lease, now.saturating_add(dur_ms(lease_for)), now)
            .await?)
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The newest job with this key, whatever its state.
    pub async fn latest_with_key(&self, key: &str) -> Result<Option<JobRecord>, JobError> {
        Ok(self.store.latest_job_with_key(key).await?)
    }
}

/// The token a job's users need: its scopes, valid for its `min_ttl`.
fn token_request(job: &JobRecord) -> TokenRequest {
    TokenRequest {
        scopes: (!job.scopes.is_empty()).then(|| job.scopes.clone()),
        min_ttl: Some(Duration::from_secs(u64::from(job.min_ttl_secs))),
    }
}

fn from_us_to_ms(us: i64) -> i64 {
    us.div_euclid(1000) + i64::from(us.rem_euclid(1000) > 0)
}

fn skip(reason: &str, detail: &str) -> Fate {
    Fate::Settle(Settle::Skipped {
        reason: reason.to_owned(),
        detail: Some(clip(detail)),
    })
}

/// What a refresh that failed while claiming makes of the item: skipped when the grant cannot
/// give tokens, else offered again later (failed, by the store, on its last offer).
fn refresh_failed(e: &BrokerError, clock: &SharedClock) -> Fate {
    match refresh_failure(e) {
        RefreshFailed::Skip { reason, detail } => skip(&reason, &detail),
        RefreshFailed::Retry { after, detail } => Fate::Settle(Settle::Retry {
            at_ms: ms(clock.now()).saturating_add(dur_ms(after)),
            detail: Some(clip(&detail)),
        }),
    }
}

/// How a user whose refresh failed is settled: skipped when the grant cannot give tokens, else
/// offered again after a delay of at least a second.
fn refresh_failure(e: &BrokerError) -> RefreshFailed {
    let skip = |reason: &str, detail: &str| RefreshFailed::Skip {
        reason: reason.to_owned(),
        detail: clip(detail),
    };
    let retry = |after: Duration, detail: String| RefreshFailed::Retry {
        after: after.max(Duration::from_secs(1)),
        detail: clip(&detail),
    };
    match e {
        BrokerError::Revoked { reason } => skip("invalid_grant", reason),
        BrokerError::NeedsConsent => skip(
            "needs_consent",
            "no refresh token is held: the user must consent again",
        ),
        BrokerError::UnknownUser => skip("deleted", "the user was deleted"),
        BrokerError::ScopeNotGranted { missing } => {
            skip("scope_not_granted", &format!("not granted: {missing}"))
        }
        BrokerError::Unavailable {
            retry_after,
            detail,
        } => retry(*retry_after, format!("Google unavailable: {detail}")),
        BrokerError::Misconfigured { detail } => retry(
            DEFAULT_RETRY,
            format!("Google refused grantkeeper's client: {detail}"),
        ),
        BrokerError::Store(_) | BrokerError::Vault(_) | BrokerError::KeysUnavailable => retry(
            Duration::from_secs(5),
            format!("grantkeeper could not refresh: {e}"),
        ),
    }
}

/// The item as a claim settles it, for in-process callers that report every user (sweeps).
fn settled_at_claim(
    item: &ClaimedItem,
    settle: &Settle,
    max_attempts: u32,
) -> Option<SettledAtClaim> {
    let (state, reason, detail) = match settle {
        Settle::Skipped { reason, detail } => (ItemState::Skipped, reason.clone(), detail.clone()),
        Settle::Retry { detail, .. } if item.attempt >= max_attempts => {
            (ItemState::Failed, "attempts".to_owned(), detail.clone())
        }
        Settle::Retry { detail, .. } => (ItemState::Pending, "retry".to_owned(), detail.clone()),
        Settle::Failed { reason, detail } => (ItemState::Failed, reason.clone(), detail.clone()),
        Settle::Done | Settle::Release { .. } => return None,
    };
    Some(SettledAtClaim {
        sub: item.sub.clone(),
        state,
        reason,
        detail: detail.unwrap_or_default(),
    })
}
