//! `grantkeeper sweep`: one job run over every user, resumable, shared by any number of
//! processes, as a job of the job engine ([`crate::jobs`]) of reserved kind `sweep:refresh` or
//! `sweep:drive-appdata`.
//!
//! A run is the running job of the sweep's kind (its key): a sweep joins it, or makes it over
//! every user, then works on it as a [`worker`](crate::jobs::worker) like any other: batches
//! of users claimed under a lease (`--batch-lease`; a batch of a process that died is offered
//! again once its lease runs out), refreshed in the job's refresh slots (`--rate`), grants that
//! cannot give a token skipped by the claim, a refresh Google could not do offered again later.
//! A refresh sweep's claims hand users out unrefreshed and each refresh runs in a window of
//! `concurrency`, the next user started as soon as a place frees (claimed ahead; stopped, the
//! users claimed and not started are given back unrefreshed). A drive-appdata sweep's claim
//! hands out tokens, and each user's Drive call runs in a window of `concurrency`.
//!
//! Jobs: `refresh` refreshes every usable grant (a refresh is a use, which keeps Google from
//! expiring grants unused for six months); `drive-appdata` lists each user's Drive
//! appDataFolder, checking end to end that their token works against the API.

use crate::jobs::worker::{self, ItemEvent, WorkOutcome, WorkerOptions};
use crate::jobs::{
    DEFAULT_MIN_TTL, HandedOut, JobError, JobSpec, JobView, Jobs, Kind, MAX_LEASE, RATE_RANGE,
};
use crate::{Broker, BrokerError};
use grantkeeper_core::{ExposeSecret, Scopes, Stopwatch, scopes::DRIVE_APPDATA};
use grantkeeper_store::{ItemState, JobState, JobsStore, Selection, StoreError};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use url::Url;

/// How long a batch stays a process's without a renewal: long enough for a slow store, short
/// enough that the batch of a process that died is soon continued.
const BATCH_LEASE: Duration = Duration::from_secs(30);
/// How often a user Google could not refresh is offered before it counts as failing.
const ATTEMPTS: u32 = 3;
/// What a sweep does for each user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Job {
    /// Refresh every usable grant upstream.
    Refresh,
    /// List the Drive appDataFolder of every grant that covers `drive.appdata`.
    DriveAppdata,
}

impl Job {
    /// The job's name on the command line and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Refresh => "refresh",
            Job::DriveAppdata => "drive-appdata",
        }
    }

    /// The kind of its jobs on the job engine.
    pub fn kind(self) -> Kind {
        match self {
            Job::Refresh => Kind::SweepRefresh,
            Job::DriveAppdata => Kind::SweepDriveAppdata,
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown sweep job {0:?}: use refresh or drive-appdata")]
pub struct UnknownJob(pub String);

impl FromStr for Job {
    type Err = UnknownJob;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refresh" => Ok(Job::Refresh),
            "drive-appdata" => Ok(Job::DriveAppdata),
            other => Err(UnknownJob(other.chars().take(40).collect())),
        }
    }
}

/// How hard a sweep pushes.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Most users worked on at once (at least 1).
    pub concurrency: usize,
    /// Most users started per second; None: as fast as the window allows.
    pub rate_per_sec: Option<f64>,
    /// Most users in a batch (also bounded by `concurrency`).
    pub page_size: u32,
    /// How long a batch stays a process's without a renewal: when a process dies, another
    /// continues its batch this long after.
    pub batch_lease: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            rate_per_sec: None,
            page_size: 100,
            batch_lease: BATCH_LEASE,
        }
    }
}

/// How one user fared.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// A transient upstream failure, an API error, or a configuration the provider refused.
    Failing,
    /// The provider declared the grant dead; it is now marked revoked.
    Revoked,
    /// Nothing to do: no usable grant, or the job's scope is not granted.
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Failing,
        Outcome::Revoked,
        Outcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failing => "failing",
            Outcome::Revoked => "revoked",
            Outcome::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user done, in the order users complete.
#[derive(Clone, Debug)]
pub struct SweepEvent {
    pub sub: String,
    pub outcome: Outcome,
    /// For people; never a token.
    pub detail: String,
    /// Users of the run done so far as this invocation knows: those the run counted when it
    /// joined (done by earlier or other invocations), and its own.
    pub done: u64,
    /// Users of the run (every user in the store when it started).
    pub total: u64,
}

/// The end of one invocation.
#[derive(Clone, Debug)]
pub struct SweepSummary {
    /// Users by outcome, in this invocation.
    pub counts: BTreeMap<Outcome, u64>,
    /// Users by outcome in the whole run as the store counts them at the end of this
    /// invocation: every user settled, whichever invocation or process did it. Once the run is
    /// finished, every user of it, once.
    pub run_counts: BTreeMap<Outcome, u64>,
    /// Whether the run is finished (false when interrupted, or when other processes still
    /// hold users of it).
    pub run_finished: bool,
    /// Whether the run was cancelled (`jobs cancel`): no user of it is handed out any more, and
    /// the next sweep starts a new run.
    pub run_cancelled: bool,
    /// Where this invocation resumed, when it continued the run right where it stood: the
    /// largest `sub` up to which every user of the run was settled when it joined.
    pub resumed_from: Option<String>,
    /// The run: the job's id.
    pub job_id: i64,
    /// True when the stop signal ended it early: the run stays unfinished, and the next
    /// invocation of the job (or another process on it) continues it.
    pub interrupted: bool,
    pub elapsed: Duration,
}

/// Runs `job` for every user, as one of any number of processes sharing the job's run: joins
/// the running job of the sweep (or makes one over every user), then works on it until no user
/// of it is left, waiting for the users other processes hold (and taking over those whose
/// lease ran out). `api_base` is the Google APIs base (`https://www.googleapis.com`, or the
/// emulator's base) for jobs that call an API; `http` is the client they call it with. Each
/// user settled is reported to `on_event` (a user Google could not refresh for now is offered
/// again and reported once settled). When `stop` turns true nothing new starts, the users in
/// hand finish and are reported, those claimed and not started are given back (a rerun, or
/// another process, continues them at once), and the summary says `interrupted`.
///
/// Fails on options that cannot work and on store errors.
#[allow(clippy::too_many_arguments)] // the job's whole context, named by the caller
pub async fn run_sweep(
    broker: &Broker,
    store: Arc<dyn JobsStore>,
    http: reqwest::Client,
    api_base: Url,
    job: Job,
    opts: SweepOptions,
    stop: watch::Receiver<bool>,
    on_event: &(dyn Fn(&SweepEvent) + Send + Sync),
) -> Result<SweepSummary, BrokerError> {
    let started = Stopwatch::start();
    check_options(&opts)?;
    let jobs = Jobs::new(broker.clone(), store.clone());
    let (run, _) = jobs
        .create_or_join(job_spec(job, &opts), "sweep")
        .await
        .map_err(job_error)?;
    let id = run.job.id;
    let progress = store.settled_through(id).await?;
    let tally = Mutex::new(Tally {
        done: run.counts.settled(),
        counts: BTreeMap::new(),
    });
    let total = run.job.total;
    let on_item = |e: &ItemEvent| {
        let Some(outcome) = outcome_of(e) else {
            return;
        };
        let done = {
            let mut tally = tally
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tally.done += 1;
            *tally.counts.entry(outcome).or_default() += 1;
            tally.done
        };
        on_event(&SweepEvent {
            sub: e.sub.clone(),
            outcome,
            detail: e.detail.clone(),
            done,
            total,
        });
    };
    let work = |item: HandedOut| {
        let work = Work {
            job,
            broker: broker.clone(),
            http: http.clone(),
            api_base: api_base.clone(),
            item,
        };
        async move { work.run().await }
    };
    let ended = worker::run(&jobs, id, worker_options(job, &opts), stop, work, &on_item)
        .await
        .map_err(job_error)?;
    let view = jobs.progress(id).await.map_err(job_error)?;
    // It continued the run where it stood when its first batch began right after the users
    // settled in order.
    let resumed_from = match (progress.settled_through, progress.first_open) {
        (Some(through), Some(first)) if ended.first_claimed.as_ref() == Some(&first) => {
            Some(through)
        }
        _ => None,
    };
    let counts = tally
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .counts;
    let summary = SweepSummary {
        counts,
        run_counts: run_counts(&view),
        run_finished: view.job.state == JobState::Finished,
        run_cancelled: view.job.state == JobState::Cancelled,
        resumed_from,
        interrupted: ended.interrupted,
        elapsed: started.elapsed(),
        job_id: id,
    };
    tracing::info!(
        job = %job,
        run = id,
        interrupted = summary.interrupted,
        elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
        "sweep ended"
    );
    Ok(summary)
}

/// This invocation's count of the run's users settled, and its own by outcome.
struct Tally {
    done: u64,
    counts: BTreeMap<Outcome, u64>,
}

/// The job a sweep runs on: every user, the sweep's kind as its key (one running run per
/// sweep job), one refresh slot per `--rate`.
pub fn job_spec(job: Job, opts: &SweepOptions) -> JobSpec {
    let lease = opts.batch_lease.clamp(Duration::from_secs(1), MAX_LEASE);
    JobSpec {
        name: format!("sweep {job}"),
        kind: job.kind(),
        key: Some(job.kind().as_str().to_owned()),
        // A user without the job's scope is skipped by the claim, and reported.
        scopes: match job {
            Job::Refresh => Scopes::default(),
            Job::DriveAppdata => Scopes::from_iter([DRIVE_APPDATA]),
        },
        selection: Selection::Everyone,
        // The job's rate is a refresh budget within the engine's bounds; above them, the
        // sweep's own pace of starts is the limit.
        rate: opts
            .rate_per_sec
            .filter(|r| *r <= *RATE_RANGE.end())
            .map(|r| r.max(*RATE_RANGE.start())),
        lease,
        min_ttl: DEFAULT_MIN_TTL,
        max_attempts: ATTEMPTS,
        spread: Duration::ZERO,
    }
}

fn worker_options(job: Job, opts: &SweepOptions) -> WorkerOptions {
    let batch = u32::try_from(opts.concurrency)
        .unwrap_or(u32::MAX)
        .min(opts.page_size)
        .clamp(1, crate::jobs::MAX_CLAIM);
    WorkerOptions {
        concurrency: opts.concurrency,
        batch,
        lease: Some(
            opts.batch_lease
                .clamp(Duration::from_millis(100), MAX_LEASE),
        ),
        start_rate: opts.rate_per_sec,
        name: format!("sweep-{}", grantkeeper_core::random::token::<12>()),
        linger: true,
        max_wait: (opts.batch_lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(2)),
        work_in_claim: false,
        refresh_in_worker: job == Job::Refresh,
    }
}

/// What a user settled makes in a sweep's words; None while it is offered again.
fn outcome_of(e: &ItemEvent) -> Option<Outcome> {
    match e.state {
        ItemState::Done => Some(Outcome::Ok),
        ItemState::Failed => Some(Outcome::Failing),
        ItemState::Skipped if e.reason.as_deref() == Some("invalid_grant") => {
            Some(Outcome::Revoked)
        }
        ItemState::Skipped => Some(Outcome::Skipped),
        ItemState::Pending | ItemState::Leased => None,
    }
}

/// The run's users by outcome, as the job counts them: Google declaring a grant dead at this
/// run's refresh is `revoked`; every other skip is `skipped`.
fn run_counts(view: &JobView) -> BTreeMap<Outcome, u64> {
    let c = &view.counts;
    let revoked = c.skipped.get("invalid_grant").copied().unwrap_or(0);
    [
        (Outcome::Ok, c.done),
        (Outcome::Failing, c.failed),
        (Outcome::Revoked, revoked),
        (Outcome::Skipped, c.skipped_total().saturating_sub(revoked)),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

fn job_error(e: JobError) -> BrokerError {
    match e {
        JobError::Store(e) => BrokerError::Store(e),
        JobError::NotFound => BrokerError::Store(StoreError::NotFound),
        JobError::NotHeld => BrokerError::Store(StoreError::Conflict),
        JobError::Invalid(detail) => BrokerError::Misconfigured { detail },
    }
}

fn check_options(opts: &SweepOptions) -> Result<(), BrokerError> {
    if opts.concurrency == 0 {
        return Err(BrokerError::Misconfigured {
            detail: "sweep concurrency must be at least 1".to_owned(),
        });
    }
    if opts.page_size == 0 {
        return Err(BrokerError::Misconfigured {
            detail: "sweep page size must be at least 1".to_owned(),
        });
    }
    match opts.rate_per_sec {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => Err(BrokerError::Misconfigured {
            detail: "sweep rate must be a positive number of users per second".to_owned(),
        }),
        _ => Ok(()),
    }
}

/// One user's work, in a task of its own: a refresh sweep's worker refreshed the user before
/// it (the token handed out is the refresh's); a drive-appdata sweep lists the user's folder
/// with the token handed out.
struct Work {
    job: Job,
    broker: Broker,
    http: reqwest::Client,
    api_base: Url,
    item: HandedOut,
}

impl Work {
    async fn run(self) -> WorkOutcome {
        match self.job {
            Job::Refresh => WorkOutcome::Done(format!(
                "refreshed, valid until {}",
                self.item.token.expires_at
            )),
            Job::DriveAppdata => self.drive_appdata().await.unwrap_or_else(|e| failed(&e)),
        }
    }

    async fn drive_appdata(&self) -> Result<WorkOutcome, BrokerError> {
        let sub = &self.item.sub;
        let mut token = self.item.token.token.clone();
        let url = appdata_listing(&self.api_base);
        let mut retried = false;
        loop {
            let answer = self
                .http
                .get(url.clone())
                .bearer_auth(token.expose_secret())
                .send()
                .await;
            let response = match answer {
                Ok(r) => r,
                Err(e) => {
                    return Ok(WorkOutcome::Failed(format!(
                        "Drive API request failed: {}",
                        e.without_url()
                    )));
                }
            };
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                // None: refreshed for a 401 moments ago; the 401 stands.
                if let Some(fresh) = self.broker.refresh_after_rejection(sub, &token).await? {
                    token = fresh.token;
                    continue;
                }
            }
            if !status.is_success() {
                return Ok(WorkOutcome::Failed(format!(
                    "Drive API answered HTTP {status}"
                )));
            }
            let files = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("files").and_then(|f| f.as_array()).map(Vec::len));
            let detail = match files {
                Some(n) => format!("{n} files in appDataFolder"),
                None => format!("Drive API answered HTTP {status}"),
            };
            return Ok(WorkOutcome::Done(detail));
        }
    }
}

/// `{api_base}/drive/v3/files?spaces=appDataFolder&fields=files(id,name)&pageSize=100`,
/// keeping any path the base has.
fn appdata_listing(api_base: &Url) -> Url {
    let mut url = api_base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(["drive", "v3", "files"]);
    }
    url.query_pairs_mut()
        .append_pair("spaces", "appDataFolder")
        .append_pair("fields", "files(id,name)")
        .append_pair("pageSize", "100");
    url
}

/// What a user whose token the broker could not serve makes: skipped, as a claim skips, when
/// the grant cannot give tokens; failing otherwise.
fn failed(e: &BrokerError) -> WorkOutcome {
    let skipped = |reason: &str| WorkOutcome::Skipped(reason.to_owned(), e.to_string());
    match e {
        BrokerError::Revoked { .. } => skipped("invalid_grant"),
        BrokerError::UnknownUser => skipped("deleted"),
        BrokerError::NeedsConsent => skipped("needs_consent"),
        BrokerError::ScopeNotGranted { .. } => skipped("scope_not_granted"),
        BrokerError::Unavailable { .. }
        | BrokerError::Misconfigured { .. }
        | BrokerError::Store(_)
        | BrokerError::Vault(_)
        | BrokerError::KeysUnavailable => WorkOutcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_parse() {
        assert_eq!("refresh".parse::<Job>().unwrap(), Job::Refresh);
        assert_eq!("drive-appdata".parse::<Job>().unwrap(), Job::DriveAppdata);
        assert!("drive".parse::<Job>().is_err());
        assert_eq!(Job::DriveAppdata.to_string(), "drive-appdata");
    }

    #[test]
    fn listing_url_keeps_the_base_path() {
        let u = appdata_listing(&Url::parse("http://127.0.0.1:9/_google").unwrap());
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/_google/drive/v3/files?spaces=appDataFolder&fields=files%28id%2Cname%29&pageSize=100"
        );
        let u = appdata_listing(&Url::parse("https://www.googleapis.com/").unwrap());
        assert!(
            u.as_str()
                .starts_with("https://www.googleapis.com/drive/v3/files?")
        );
    }

    #[test]
    fn bad_options_are_refused() {
        let ok = SweepOptions::default();
        assert!(check_options(&ok).is_ok());
        for bad in [
            SweepOptions {
                concurrency: 0,
                ..SweepOptions::default()
            },
            SweepOptions {
                page_size: 0,
                ..SweepOptions::default()
            },
            SweepOptions {
                rate_per_sec: Some(0.0),
                ..SweepOptions::default()
            },
            SweepOptions {
                rate_per_sec: Some(f64::NAN),
                ..SweepOptions::default()
            },
        ] {
            assert!(matches!(
                check_options(&bad),
                Err(BrokerError::Misconfigured { .. })
            ));
        }
    }
}
