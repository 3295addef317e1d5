//! `grantkeeper sweep`: one job run over every user, resumable.
//!
//! Users are taken in `sub` order, page by page, and worked on through a sliding window of at
//! most `concurrency` at once (a slow user holds one place, not a whole page), started at
//! most `rate_per_sec` times a second. Progress is a watermark: the largest `sub` such that
//! every user up to it is done, saved with the counts of those users every page or few
//! seconds, so that an interrupted run (the stop signal, a crash) resumes after it.
//!
//! Jobs: `refresh` refreshes every usable grant (a refresh is a use, which keeps Google from
//! expiring grants unused for six months); `drive-appdata` lists each user's Drive
//! appDataFolder, checking end to end that their token works against the API.

use crate::{Broker, BrokerError, TokenRequest};
use grantkeeper_core::{ExposeSecret, GrantState, Scopes, scopes::DRIVE_APPDATA};
use grantkeeper_store::{GrantRecord, SharedStore, UserRecord};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use url::Url;

/// Progress is saved at least this often while users complete.
const SAVE_EVERY: Duration = Duration::from_secs(3);

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
    /// Users read from the store at a time; progress is saved at least once a page.
    pub page_size: u32,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            rate_per_sec: None,
            page_size: 100,
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
    /// Users done in this run so far, counting those an earlier, interrupted invocation did.
    pub done: u64,
    /// Users in the store when this invocation started.
    pub total: u64,
}

/// The end of one invocation.
#[derive(Clone, Debug)]
pub struct SweepSummary {
    /// Users by outcome, in this invocation (the store keeps the whole run's counts).
    pub counts: BTreeMap<Outcome, u64>,
    /// The watermark this invocation resumed after, when it continued an interrupted run.
    pub resumed_from: Option<String>,
    /// True when the stop signal ended it early: the run stays unfinished, and the next
    /// invocation of the job resumes it.
    pub interrupted: bool,
    pub elapsed: Duration,
}

/// Runs `job` for every user, from where an unfinished run of it stopped. `api_base` is the
/// Google APIs base (`https://www.googleapis.com`, or the emulator's base) for jobs that call
/// an API; `http` is the client they call it with. Each completed user is reported to
/// `on_event`. When `stop` turns true nothing new starts, the users in flight finish, the
/// progress is saved, and the summary says `interrupted`.
///
/// Fails on options that cannot work and on store errors (progress up to then is saved).
#[allow(clippy::too_many_arguments)] // the job's whole context, named by the caller
pub async fn run_sweep(
    broker: &Broker,
    store: &SharedStore,
    http: reqwest::Client,
    api_base: Url,
    job: Job,
    opts: SweepOptions,
    stop: watch::Receiver<bool>,
    on_event: &(dyn Fn(&SweepEvent) + Send + Sync),
) -> Result<SweepSummary, BrokerError> {
    let started = Instant::now();
    let limiter = check_options(&opts)?;
    let run = store
        .start_or_resume_sweep(job.as_str(), broker.inner.clock.now())
        .await?;
    let total = store.count_users().await?;
    let mut sweep = Sweep {
        job,
        broker: broker.clone(),
        http,
        api_base,
        store: store.clone(),
        run_id: run.id,
        total,
        done: 0,
        counts: BTreeMap::new(),
        prefix_counts: parse_counts(&run.counts),
        window: VecDeque::new(),
        first_seq: 0,
        watermark: run.cursor.clone(),
        saved_watermark: run.cursor.clone(),
        done_since_save: 0,
        last_save: Instant::now(),
        page_size: opts.page_size,
        on_event,
    };
    sweep.done = sweep.prefix_counts.values().sum();
    if let Some(cursor) = &run.cursor {
        tracing::info!(job = %job, cursor, "resuming an interrupted sweep");
    }

    let outcome = sweep
        .drive(run.cursor.clone(), opts.concurrency, limiter, stop)
        .await;
    let interrupted = match outcome {
        Ok(interrupted) => interrupted,
        Err(e) => {
            sweep.save(true).await;
            return Err(e);
        }
    };
    if interrupted {
        sweep.save(true).await;
    } else {
        store
            .finish_sweep(
                run.id,
                &counts_json(&sweep.prefix_counts),
                broker.inner.clock.now(),
            )
            .await?;
    }
    let summary = SweepSummary {
        counts: sweep.counts,
        resumed_from: run.cursor,
        interrupted,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        job = %job,
        interrupted,
        elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
        counts = %counts_json(&summary.counts),
        "sweep ended"
    );
    Ok(summary)
}

fn check_options(opts: &SweepOptions) -> Result<Option<Limiter>, BrokerError> {
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
        None => Ok(None),
        Some(rate) if rate.is_finite() && rate > 0.0 => Ok(Some(Limiter {
            interval: Duration::from_secs_f64(1.0 / rate.max(1e-6)),
            next: tokio::time::Instant::now(),
        })),
        Some(_) => Err(BrokerError::Misconfigured {
            detail: "sweep rate must be a positive number of users per second".to_owned(),
        }),
    }
}

/// At most one start per `interval`.
struct Limiter {
    interval: Duration,
    next: tokio::time::Instant,
}

impl Limiter {
    async fn admit(&mut self) {
        let at = self.next.max(tokio::time::Instant::now());
        tokio::time::sleep_until(at).await;
        self.next = at + self.interval;
    }
}

/// Resolves once `stop` is true; never if its sender is gone without saying so.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One user dispatched, in `sub` order; `outcome` is set when it completes.
struct Slot {
    sub: String,
    outcome: Option<Outcome>,
}

struct Sweep<'a> {
    job: Job,
    broker: Broker,
    http: reqwest::Client,
    api_base: Url,
    store: SharedStore,
    run_id: i64,
    total: u64,
    done: u64,
    /// This invocation's.
    counts: BTreeMap<Outcome, u64>,
    /// The run's, for the users up to the watermark only: they are what the store keeps, so a
    /// user done beyond the watermark before an interruption is not counted twice.
    prefix_counts: BTreeMap<Outcome, u64>,
    /// Dispatched users not yet under the watermark; `first_seq` is the front's number.
    window: VecDeque<Slot>,
    first_seq: u64,
    watermark: Option<String>,
    saved_watermark: Option<String>,
    done_since_save: u32,
    last_save: Instant,
    page_size: u32,
    on_event: &'a (dyn Fn(&SweepEvent) + Send + Sync),
}

impl Sweep<'_> {
    /// Dispatches and collects until every user is done (Ok(false)) or `stop` ended it
    /// (Ok(true)).
    async fn drive(
        &mut self,
        after: Option<String>,
        concurrency: usize,
        mut limiter: Option<Limiter>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<bool, BrokerError> {
        let mut after = after;
        let mut page: VecDeque<(UserRecord, GrantRecord)> = VecDeque::new();
        let mut more = true;
        let mut tasks: JoinSet<(Outcome, String)> = JoinSet::new();
        let mut seq_of: HashMap<tokio::task::Id, u64> = HashMap::new();
        let mut interrupted = false;
        let mut failure: Option<BrokerError> = None;

        loop {
            // Fill the window.
            while !interrupted && failure.is_none() && tasks.len() < concurrency {
                if *stop.borrow() {
                    interrupted = true;
                    break;
                }
                if page.is_empty() && more {
                    match self
                        .store
                        .list_users(after.as_deref(), self.page_size)
                        .await
                    {
                        Ok(p) => {
                            more = p.next.is_some();
                            if let Some((user, _)) = p.users.last() {
                                after = Some(user.profile.sub.clone());
                            } else {
                                more = false;
                            }
                            page.extend(p.users);
                        }
                        Err(e) => {
                            failure = Some(e.into());
                            break;
                        }
                    }
                }
                let Some((user, grant)) = page.pop_front() else {
                    break;
                };
                let sub = user.profile.sub;
                let seq = self.first_seq + self.window.len() as u64;
                if let Some(reason) = skip_reason(self.job, &grant) {
                    self.window.push_back(Slot {
                        sub: sub.clone(),
                        outcome: None,
                    });
                    self.complete(seq, Outcome::Skipped, reason).await;
                    continue;
                }
                if let Some(limiter) = &mut limiter {
                    tokio::select! {
                        () = limiter.admit() => {}
                        () = stopped(&mut stop) => {
                            interrupted = true;
                            break;
                        }
                    }
                }
                self.window.push_back(Slot {
                    sub: sub.clone(),
                    outcome: None,
                });
                let work = Work {
                    job: self.job,
                    broker: self.broker.clone(),
                    http: self.http.clone(),
                    api_base: self.api_base.clone(),
                    sub,
                };
                let handle = tasks.spawn(work.run());
                seq_of.insert(handle.id(), seq);
            }

            if tasks.is_empty() {
                if interrupted || failure.is_some() || (page.is_empty() && !more) {
                    break;
                }
                continue;
            }

            tokio::select! {
                joined = tasks.join_next_with_id() => {
                    let (id, outcome, detail) = match joined {
                        Some(Ok((id, (outcome, detail)))) => (id, outcome, detail),
                        Some(Err(e)) => (e.id(), Outcome::Failing, format!("the job's task failed: {e}")),
                        None => continue,
                    };
                    if let Some(seq) = seq_of.remove(&id) {
                        self.complete(seq, outcome, detail).await;
                    }
                }
                () = stopped(&mut stop), if !interrupted => {
                    tracing::info!(job = %self.job, in_flight = tasks.len(), "stop asked: letting the users in flight finish");
                    interrupted = true;
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(interrupted),
        }
    }

    /// Records a user done, reports it, moves the watermark, saves now and then.
    async fn complete(&mut self, seq: u64, outcome: Outcome, detail: String) {
        let Some(slot) = seq
            .checked_sub(self.first_seq)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.window.get_mut(i))
        else {
            return;
        };
        slot.outcome = Some(outcome);
        let sub = slot.sub.clone();
        *self.counts.entry(outcome).or_default() += 1;
        self.done += 1;
        (self.on_event)(&SweepEvent {
            sub,
            outcome,
            detail,
            done: self.done,
            total: self.total,
        });
        while let Some(Slot {
            outcome: Some(_), ..
        }) = self.window.front()
        {
            if let Some(Slot {
                sub,
                outcome: Some(outcome),
            }) = self.window.pop_front()
            {
                *self.prefix_counts.entry(outcome).or_default() += 1;
                self.watermark = Some(sub);
                self.first_seq += 1;
                self.done_since_save += 1;
            }
        }
        self.save(false).await;
    }

    /// Saves the watermark when it moved and a page's worth of users or a few seconds passed
    /// (or always, with `now`).
    async fn save(&mut self, now: bool) {
        if self.watermark == self.saved_watermark {
            return;
        }
        if !now && self.done_since_save < self.page_size && self.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        let Some(cursor) = self.watermark.clone() else {
            return;
        };
        match self
            .store
            .save_sweep_progress(self.run_id, &cursor, &counts_json(&self.prefix_counts))
            .await
        {
            Ok(()) => {
                self.saved_watermark = Some(cursor);
                self.done_since_save = 0;
                self.last_save = Instant::now();
            }
            // The work is done either way; a resume would only redo some of it.
            Err(e) => tracing::warn!(job = %self.job, error = %e, "could not save sweep progress"),
        }
    }
}

/// Why a user needs no work, when none is needed.
fn skip_reason(job: Job, grant: &GrantRecord) -> Option<String> {
    if grant.state == GrantState::Revoked || grant.needs_consent() {
        return Some(format!("grant is {}", grant.state));
    }
    if job == Job::DriveAppdata && !grant.scopes.contains(DRIVE_APPDATA) {
        return Some("drive.appdata is not granted".to_owned());
    }
    None
}

/// One user's work, in a task of its own.
struct Work {
    job: Job,
    broker: Broker,
    http: reqwest::Client,
    api_base: Url,
    sub: String,
}

impl Work {
    async fn run(self) -> (Outcome, String) {
        let answer = match self.job {
            Job::Refresh => self.broker.refresh_now(&self.sub).await.map(|t| {
                (
                    Outcome::Ok,
                    format!("refreshed, valid until {}", t.expires_at),
                )
            }),
            Job::DriveAppdata => self.drive_appdata().await,
        };
        answer.unwrap_or_else(|e| (classify(&e), e.to_string()))
    }

    async fn drive_appdata(&self) -> Result<(Outcome, String), BrokerError> {
        let request = TokenRequest {
            scopes: Some(Scopes::from_iter([DRIVE_APPDATA])),
            min_ttl: None,
        };
        let mut token = self.broker.access_token(&self.sub, &request).await?;
        let url = appdata_listing(&self.api_base);
        let mut retried = false;
        loop {
            let answer = self
                .http
                .get(url.clone())
                .bearer_auth(token.token.expose_secret())
                .send()
                .await;
            let response = match answer {
                Ok(r) => r,
                Err(e) => {
                    return Ok((
                        Outcome::Failing,
                        format!("Drive API request failed: {}", e.without_url()),
                    ));
                }
            };
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                token = self
                    .broker
                    .refresh_after_rejection(&self.sub, &token.token)
                    .await?;
                continue;
            }
            if !status.is_success() {
                return Ok((
                    Outcome::Failing,
                    format!("Drive API answered HTTP {status}"),
                ));
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
            return Ok((Outcome::Ok, detail));
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

fn classify(e: &BrokerError) -> Outcome {
    match e {
        BrokerError::Revoked { .. } => Outcome::Revoked,
        BrokerError::UnknownUser
        | BrokerError::NeedsConsent
        | BrokerError::ScopeNotGranted { .. } => Outcome::Skipped,
        BrokerError::Unavailable { .. }
        | BrokerError::Misconfigured { .. }
        | BrokerError::Store(_)
        | BrokerError::Vault(_) => Outcome::Failing,
    }
}

/// `{"ok": n, "failing": n, "revoked": n, "skipped": n}`, as the store keeps counts.
fn counts_json(counts: &BTreeMap<Outcome, u64>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = Outcome::ALL
        .iter()
        .map(|o| {
            (
                o.as_str().to_owned(),
                counts.get(o).copied().unwrap_or(0).into(),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn parse_counts(text: &str) -> BTreeMap<Outcome, u64> {
    let parsed: BTreeMap<String, u64> = serde_json::from_str(text).unwrap_or_default();
    Outcome::ALL
        .iter()
        .filter_map(|o| parsed.get(o.as_str()).map(|n| (*o, *n)))
        .filter(|(_, n)| *n > 0)
        .collect()
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
    fn counts_round_trip() {
        let mut counts = BTreeMap::new();
        counts.insert(Outcome::Ok, 3);
        counts.insert(Outcome::Skipped, 2);
        let text = counts_json(&counts);
        assert_eq!(text, r#"{"failing":0,"ok":3,"revoked":0,"skipped":2}"#);
        assert_eq!(parse_counts(&text), counts);
        assert!(parse_counts("{}").is_empty());
        assert!(parse_counts("not json").is_empty());
        assert_eq!(
            serde_json::to_string(&Outcome::Failing).unwrap(),
            "\"failing\""
        );
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
        assert!(check_options(&ok).unwrap().is_none());
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
