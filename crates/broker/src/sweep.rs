//! `grantkeeper sweep`: one job run over every user, resumable, shared by any number of
//! processes.
//!
//! A run is cut into batches of users in `sub` order, which the store hands out one process at
//! a time under a lease (`SweepBatchStore`): a process claims a batch, works on its users, and
//! marks it done with their counts; a batch whose process stopped or died is claimed again by
//! the next one, which continues after its saved progress. Within a process, users are worked
//! on through a sliding window of at most `concurrency` at once (a slow user holds one place,
//! not a whole batch; the next batch is claimed before this one runs dry), started at most
//! `rate_per_sec` times a second. A batch's progress is a watermark: the largest `sub` such
//! that every user of the batch up to it is done, saved (which also extends the lease) every
//! hundred users or few seconds, so that an interrupted run (the stop signal, a crash) resumes
//! after it.
//!
//! Jobs: `refresh` refreshes every usable grant (a refresh is a use, which keeps Google from
//! expiring grants unused for six months); `drive-appdata` lists each user's Drive
//! appDataFolder, checking end to end that their token works against the API.

use crate::{Broker, BrokerError, TokenRequest};
use grantkeeper_core::{ExposeSecret, GrantState, Scopes, SharedClock, scopes::DRIVE_APPDATA};
use grantkeeper_store::{GrantRecord, StoreError, SweepBatch, SweepJobStore, UserRecord};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;
use url::Url;

/// A batch's progress is saved, and its lease extended, at least this often while it is held
/// (also when no user completes, so that a slow one does not cost the batch its lease)...
const SAVE_EVERY: Duration = Duration::from_secs(3);
/// ...and every this many users done.
const SAVE_USERS: u32 = 100;
/// How long a batch stays a process's without a save: long enough for a slow store, short
/// enough that the batch of a process that died is soon continued.
const BATCH_LEASE: Duration = Duration::from_secs(30);

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
    /// Users in a batch, and read from the store at a time.
    pub page_size: u32,
    /// How long a batch stays a process's without a save: when a process dies, another
    /// continues its batch this long after its last save.
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
    /// joined (batches done by earlier or other invocations), those an earlier holder did in a
    /// batch it continued, and its own.
    pub done: u64,
    /// Users in the store when this invocation started.
    pub total: u64,
}

/// The end of one invocation.
#[derive(Clone, Debug)]
pub struct SweepSummary {
    /// Users by outcome, in this invocation.
    pub counts: BTreeMap<Outcome, u64>,
    /// Users by outcome in the whole run as the store counts them at the end of this
    /// invocation: the users of every finished batch, whichever invocation or process did
    /// them (a batch continued after an interruption brings the counts saved with its
    /// progress). Once the run is finished, every user of it, once.
    pub run_counts: BTreeMap<Outcome, u64>,
    /// Whether the run is finished (false when interrupted, or when other processes still
    /// hold batches of it).
    pub run_finished: bool,
    /// Where this invocation resumed, when its first batch was one another invocation left
    /// unfinished: that batch's saved progress.
    pub resumed_from: Option<String>,
    /// True when the stop signal ended it early: the run stays unfinished, and the next
    /// invocation of the job (or another process on it) continues it.
    pub interrupted: bool,
    pub elapsed: Duration,
}

/// Runs `job` for every user, as one of any number of processes sharing the job's run: joins
/// the unfinished run of the job (or starts one), then claims batches of users until none is
/// left, taking over first the batches of processes that stopped or died. `api_base` is the
/// Google APIs base (`https://www.googleapis.com`, or the emulator's base) for jobs that call
/// an API; `http` is the client they call it with. Each completed user is reported to
/// `on_event`. When `stop` turns true nothing new starts, the users in flight finish, the
/// progress of the batches held is saved and they are given back (a rerun, or another
/// process, continues them at once), and the summary says `interrupted`. Otherwise, once no
/// batch is left to claim, the run is finished if every batch of it is done (a process still
/// working on one finishes it later).
///
/// Fails on options that cannot work and on store errors (progress up to then is saved and
/// the batches given back).
#[allow(clippy::too_many_arguments)] // the job's whole context, named by the caller
pub async fn run_sweep(
    broker: &Broker,
    store: Arc<dyn SweepJobStore>,
    http: reqwest::Client,
    api_base: Url,
    job: Job,
    opts: SweepOptions,
    stop: watch::Receiver<bool>,
    on_event: &(dyn Fn(&SweepEvent) + Send + Sync),
) -> Result<SweepSummary, BrokerError> {
    let started = Instant::now();
    let limiter = check_options(&opts)?;
    let clock = broker.inner.clock.clone();
    let run = store
        .start_or_resume_sweep(job.as_str(), clock.now())
        .await?;
    let total = store.count_users().await?;
    let mut sweep = Sweep {
        job,
        broker: broker.clone(),
        http,
        api_base,
        store: store.clone(),
        clock: clock.clone(),
        run_id: run.id,
        owner: format!("sweep-{}", grantkeeper_core::random::token::<12>()),
        page_size: opts.page_size,
        batch_lease: opts.batch_lease,
        total,
        done: parse_counts(&run.counts).values().sum(),
        counts: BTreeMap::new(),
        claims: 0,
        resumed_from: None,
        held: HashMap::new(),
        pending: VecDeque::new(),
        window: VecDeque::new(),
        first_seq: 0,
        exhausted: false,
        on_event,
    };

    let mut limiter = limiter;
    let mut wait_stop = stop.clone();
    let interrupted = loop {
        let outcome = sweep
            .drive(opts.concurrency, limiter.take(), stop.clone())
            .await;
        // However it ended, what is still held is saved and given back.
        sweep.give_back().await;
        if outcome? {
            break true;
        }
        if store
            .complete_sweep_run_if_done(run.id, clock.now())
            .await?
        {
            break false;
        }
        // Other processes hold the run's last batches: wait until they finish them, or until
        // the lease of one that died runs out and its batch can be continued here.
        tracing::info!(
            job = %job,
            run = run.id,
            "no batch left to claim; waiting for the batches other processes hold"
        );
        let poll =
            (opts.batch_lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(2));
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = wait_stop.changed() => {}
        }
        if *wait_stop.borrow() {
            break true;
        }
        sweep.exhausted = false;
        limiter = check_options(&opts)?;
    };
    let stored = store.sweep_run(run.id).await?;
    let summary = SweepSummary {
        counts: sweep.counts,
        run_counts: stored
            .as_ref()
            .map(|r| parse_counts(&r.counts))
            .unwrap_or_default(),
        run_finished: stored.is_some_and(|r| r.finished_at.is_some()),
        resumed_from: sweep.resumed_from,
        interrupted,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        job = %job,
        interrupted,
        batches = sweep.claims,
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
    batch: i64,
    sub: String,
    outcome: Option<Outcome>,
}

/// A user of a held batch, read and not yet dispatched.
struct Pending {
    batch: i64,
    sub: String,
    grant: GrantRecord,
}

/// A batch this process holds.
struct Held {
    batch: SweepBatch,
    /// The counts of its users up to the watermark: those of the processes that held it
    /// before (saved with their progress) and this one's, saved with the progress and added to
    /// the run's when the batch is done.
    counts: BTreeMap<Outcome, u64>,
    /// Its users read and not yet under the watermark (pending, or in the window): the batch
    /// is done when none is left.
    open: usize,
    /// The largest `sub` of the batch such that every user of it up to there is done.
    watermark: Option<String>,
    saved: Option<String>,
    since_save: u32,
    last_save: Instant,
}

/// A batch claimed, with its users still to do.
struct Claimed {
    batch: SweepBatch,
    users: Vec<(UserRecord, GrantRecord)>,
    /// Users of it that the process before this one did (up to its saved progress).
    done_before: u64,
}

/// A claim under way, in a task of its own: it holds a store connection (SQLite's one writer)
/// while it runs, so it must go on while this process awaits other store calls.
type Claiming = tokio::task::JoinHandle<Result<Option<Claimed>, StoreError>>;

/// Why progress is saved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Save {
    /// Users completed: when enough did, or enough time passed.
    Progress,
    /// Time passed: the lease is extended even when the watermark did not move (a slow user).
    Renew,
    /// Before giving the batch back.
    Last,
}

struct Sweep<'a> {
    job: Job,
    broker: Broker,
    http: reqwest::Client,
    api_base: Url,
    store: Arc<dyn SweepJobStore>,
    clock: SharedClock,
    run_id: i64,
    /// This invocation's name as the holder of batches.
    owner: String,
    page_size: u32,
    batch_lease: Duration,
    total: u64,
    /// Users of the run done as far as this invocation knows: those counted in the run when it
    /// joined, those done in batches it took over, and its own.
    done: u64,
    /// This invocation's.
    counts: BTreeMap<Outcome, u64>,
    claims: u64,
    resumed_from: Option<String>,
    held: HashMap<i64, Held>,
    /// Users to dispatch, in batch and `sub` order.
    pending: VecDeque<Pending>,
    /// Dispatched users not yet under their batch's watermark; `first_seq` is the front's
    /// number.
    window: VecDeque<Slot>,
    first_seq: u64,
    /// A claim found nothing left.
    exhausted: bool,
    on_event: &'a (dyn Fn(&SweepEvent) + Send + Sync),
}

impl Sweep<'_> {
    /// Saves come often enough that a live process never loses a batch to its lease.
    fn save_every(&self) -> Duration {
        SAVE_EVERY
            .min(self.batch_lease / 3)
            .max(Duration::from_millis(50))
    }

    /// Dispatches and collects until no batch is left to claim and every user is done
    /// (Ok(false)), or `stop` ended it (Ok(true)).
    async fn drive(
        &mut self,
        concurrency: usize,
        mut limiter: Option<Limiter>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<bool, BrokerError> {
        let mut tasks: JoinSet<(Outcome, String)> = JoinSet::new();
        let mut seq_of: HashMap<tokio::task::Id, u64> = HashMap::new();
        let mut claiming: Option<Claiming> = None;
        let mut interrupted = false;
        let mut failure: Option<BrokerError> = None;
        let save_every = self.save_every();
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + save_every, save_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            // Fill the window.
            while !interrupted && failure.is_none() && tasks.len() < concurrency {
                if *stop.borrow() {
                    interrupted = true;
                    break;
                }
                // The next batch is claimed while this one still has users to start, so that
                // the window never waits for the store.
                if claiming.is_none() && !self.exhausted && self.pending.len() < concurrency {
                    claiming = Some(self.claim());
                }
                if self.pending.is_empty() {
                    let Some(next) = claiming.take() else {
                        break;
                    };
                    if let Err(e) = self.claimed(next.await).await {
                        failure = Some(e);
                    }
                    continue;
                }
                let Some(Pending { batch, sub, grant }) = self.pending.pop_front() else {
                    break;
                };
                let seq = self.first_seq + self.window.len() as u64;
                if let Some(reason) = skip_reason(self.job, &grant) {
                    self.window.push_back(Slot {
                        batch,
                        sub,
                        outcome: None,
                    });
                    if let Err(e) = self.complete(seq, Outcome::Skipped, reason).await {
                        failure = Some(e);
                    }
                    continue;
                }
                if let Some(limiter) = &mut limiter {
                    // A slow pace must not cost the batches their leases. (`admit` only moves
                    // the pace once its wait is over, so it may be polled again after a tick.)
                    let admitted = loop {
                        tokio::select! {
                            () = limiter.admit() => break true,
                            () = stopped(&mut stop) => break false,
                            _ = renew.tick() => self.renew().await,
                        }
                    };
                    if !admitted {
                        // Not started: it stays to do, for whoever continues the batch.
                        self.pending.push_front(Pending { batch, sub, grant });
                        interrupted = true;
                        break;
                    }
                }
                self.window.push_back(Slot {
                    batch,
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
                if interrupted || failure.is_some() {
                    break;
                }
                if self.pending.is_empty() && claiming.is_none() && self.exhausted {
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
                    if let Some(seq) = seq_of.remove(&id)
                        && let Err(e) = self.complete(seq, outcome, detail).await
                    {
                        failure.get_or_insert(e);
                    }
                }
                claimed = async {
                    match claiming.as_mut() {
                        Some(next) => next.await,
                        None => std::future::pending().await,
                    }
                }, if claiming.is_some() => {
                    claiming = None;
                    if let Err(e) = self.claimed(claimed).await {
                        failure.get_or_insert(e);
                    }
                }
                _ = renew.tick() => self.renew().await,
                () = stopped(&mut stop), if !interrupted => {
                    tracing::info!(job = %self.job, in_flight = tasks.len(), "stop asked: letting the users in flight finish");
                    interrupted = true;
                }
            }
        }
        // A batch claimed meanwhile is taken in, to be given back with the others.
        if let Some(next) = claiming.take()
            && let Err(e) = self.claimed(next.await).await
        {
            failure.get_or_insert(e);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(interrupted),
        }
    }

    /// Claims the run's next batch and reads its users, in the background.
    fn claim(&self) -> Claiming {
        let store = self.store.clone();
        let clock = self.clock.clone();
        let (run_id, owner, size, lease) = (
            self.run_id,
            self.owner.clone(),
            self.page_size,
            self.batch_lease,
        );
        tokio::spawn(async move {
            let now = clock.now();
            let Some(batch) = store
                .claim_sweep_batch(run_id, &owner, size, lease_end(now, lease), now)
                .await?
            else {
                return Ok(None);
            };
            match batch_users(&store, &batch, size).await {
                Ok((users, done_before)) => Ok(Some(Claimed {
                    batch,
                    users,
                    done_before,
                })),
                Err(e) => {
                    // Given back at once rather than left to run out.
                    let _ = store.release_sweep_batch(batch.id, &owner).await;
                    Err(e)
                }
            }
        })
    }

    /// Takes in what a claim brought.
    async fn claimed(
        &mut self,
        claimed: Result<Result<Option<Claimed>, StoreError>, tokio::task::JoinError>,
    ) -> Result<(), BrokerError> {
        let claimed = claimed.map_err(|e| BrokerError::Unavailable {
            retry_after: Duration::from_secs(1),
            detail: format!("claiming a sweep batch ended abnormally: {e}"),
        })??;
        let Some(Claimed {
            batch,
            users,
            done_before,
        }) = claimed
        else {
            self.exhausted = true;
            return Ok(());
        };
        if self.held.contains_key(&batch.id) {
            // One of ours whose lease ran out (saves failed for a while): the claim renewed it,
            // and its users are already here.
            return Ok(());
        }
        self.claims += 1;
        // Only a batch left by another process has progress of its own.
        if let Some(progress) = &batch.progress {
            tracing::info!(
                job = %self.job,
                batch = batch.id,
                progress,
                "continuing a batch another process left unfinished"
            );
            if self.claims == 1 {
                self.resumed_from = Some(progress.clone());
            }
        }
        self.done += done_before;
        let id = batch.id;
        let open = users.len();
        self.pending
            .extend(users.into_iter().map(|(user, grant)| Pending {
                batch: id,
                sub: user.profile.sub,
                grant,
            }));
        self.held.insert(
            id,
            Held {
                open,
                watermark: batch.progress.clone(),
                saved: batch.progress.clone(),
                counts: parse_counts(&batch.counts),
                batch,
                since_save: 0,
                last_save: Instant::now(),
            },
        );
        // A batch with nothing left (its users done or deleted) is done at once.
        self.settle(id).await
    }

    /// Records a user done, reports it, moves its batch's watermark; saves now and then and
    /// finishes batches that are done.
    async fn complete(
        &mut self,
        seq: u64,
        outcome: Outcome,
        detail: String,
    ) -> Result<(), BrokerError> {
        let Some(slot) = seq
            .checked_sub(self.first_seq)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.window.get_mut(i))
        else {
            return Ok(());
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
        let mut moved: Vec<i64> = Vec::new();
        while let Some(Slot {
            outcome: Some(_), ..
        }) = self.window.front()
        {
            if let Some(Slot {
                batch,
                sub,
                outcome: Some(outcome),
            }) = self.window.pop_front()
            {
                self.first_seq += 1;
                // Users of a batch lost to another process are not its to record. A user is
                // counted once under the watermark, so that the counts saved with it are
                // those of the users it covers.
                if let Some(held) = self.held.get_mut(&batch) {
                    *held.counts.entry(outcome).or_default() += 1;
                    held.watermark = Some(sub);
                    held.open = held.open.saturating_sub(1);
                    held.since_save += 1;
                    if moved.last() != Some(&batch) {
                        moved.push(batch);
                    }
                }
            }
        }
        for batch in moved {
            self.settle(batch).await?;
        }
        Ok(())
    }

    /// Finishes the batch when none of its users is left, else saves its progress when due.
    async fn settle(&mut self, id: i64) -> Result<(), BrokerError> {
        let Some(held) = self.held.get(&id) else {
            return Ok(());
        };
        if held.open > 0 {
            self.save(id, Save::Progress).await;
            return Ok(());
        }
        let counts = counts_json(&held.counts);
        match self
            .store
            .finish_sweep_batch(id, &self.owner, &counts, self.clock.now())
            .await
        {
            Ok(()) => {
                self.held.remove(&id);
                Ok(())
            }
            Err(StoreError::Conflict) => {
                self.lost(id);
                Ok(())
            }
            // Kept, to be saved and given back with the others.
            Err(e) => Err(e.into()),
        }
    }

    /// Saves a batch's watermark when `why` says so, extending its lease.
    async fn save(&mut self, id: i64, why: Save) {
        let Some(held) = self.held.get(&id) else {
            return;
        };
        let moved = held.watermark != held.saved;
        let late = held.last_save.elapsed() >= self.save_every();
        let due = match why {
            Save::Progress => moved && (held.since_save >= SAVE_USERS || late),
            Save::Renew => late,
            Save::Last => moved,
        };
        // Before any user of it is done, the batch's start says "nothing yet" (none of its
        // users is at or before it); the run's first batch has none to say.
        let Some(progress) = held.watermark.clone().or_else(|| held.batch.after.clone()) else {
            return;
        };
        if !due {
            return;
        }
        let now = self.clock.now();
        let counts = counts_json(&held.counts);
        match self
            .store
            .save_batch_progress(
                id,
                &self.owner,
                &progress,
                &counts,
                lease_end(now, self.batch_lease),
            )
            .await
        {
            Ok(()) => {
                if let Some(held) = self.held.get_mut(&id) {
                    held.saved = held.watermark.clone();
                    held.since_save = 0;
                    held.last_save = Instant::now();
                }
            }
            Err(StoreError::Conflict) => self.lost(id),
            // The work is done either way; whoever continues the batch redoes some of it.
            Err(e) => {
                tracing::warn!(
                    job = %self.job,
                    batch = id,
                    error = %e,
                    "could not save sweep progress"
                )
            }
        }
    }

    /// Extends the lease of every batch held that was not saved for a while.
    async fn renew(&mut self) {
        let ids: Vec<i64> = self.held.keys().copied().collect();
        for id in ids {
            self.save(id, Save::Renew).await;
        }
    }

    /// The batch's lease ran out and another process took it: that process does what was not
    /// saved; this one starts nothing more of it and records nothing of it.
    fn lost(&mut self, id: i64) {
        if self.held.remove(&id).is_some() {
            self.pending.retain(|p| p.batch != id);
            tracing::info!(
                job = %self.job,
                batch = id,
                "another process took over a batch whose lease ran out; leaving it to that process"
            );
        }
    }

    /// Saves the progress of every batch still held and gives them back, so that a rerun or
    /// another process continues them at once.
    async fn give_back(&mut self) {
        let ids: Vec<i64> = self.held.keys().copied().collect();
        for id in ids {
            self.save(id, Save::Last).await;
            if self.held.remove(&id).is_none() {
                continue;
            }
            match self.store.release_sweep_batch(id, &self.owner).await {
                Ok(()) | Err(StoreError::Conflict) => {}
                // Its lease runs out by itself; until then nobody continues it.
                Err(e) => {
                    tracing::warn!(
                        job = %self.job,
                        batch = id,
                        error = %e,
                        "could not give a sweep batch back"
                    )
                }
            }
        }
        self.pending.clear();
    }
}

/// The users of `batch` still to do, in `sub` order, and how many of it are done already (up
/// to its progress).
async fn batch_users(
    store: &Arc<dyn SweepJobStore>,
    batch: &SweepBatch,
    page: u32,
) -> Result<(Vec<(UserRecord, GrantRecord)>, u64), StoreError> {
    let mut users = Vec::new();
    let mut done_before = 0;
    let mut after = batch.after.clone();
    loop {
        let p = store.list_users(after.as_deref(), page).await?;
        for (user, grant) in p.users {
            if user.profile.sub > batch.last {
                return Ok((users, done_before));
            }
            if batch
                .progress
                .as_ref()
                .is_some_and(|progress| user.profile.sub <= *progress)
            {
                done_before += 1;
            } else {
                users.push((user, grant));
            }
        }
        match p.next {
            Some(next) if next < batch.last => after = Some(next),
            _ => return Ok((users, done_before)),
        }
    }
}

fn lease_end(now: OffsetDateTime, lease: Duration) -> OffsetDateTime {
    now.checked_add(time::Duration::try_from(lease).unwrap_or(time::Duration::MINUTE))
        .unwrap_or(now)
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
                // None: refreshed for a 401 moments ago; the 401 stands.
                if let Some(fresh) = self
                    .broker
                    .refresh_after_rejection(&self.sub, &token.token)
                    .await?
                {
                    token = fresh.into();
                    continue;
                }
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
        | BrokerError::Vault(_)
        | BrokerError::KeysUnavailable => Outcome::Failing,
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
