//! A worker inside this process: claims batches of a job, works on its users through a sliding
//! window of at most `concurrency` at once (a slow user holds one place, not a batch; the next
//! batch is claimed before this one runs dry), started at most `start_rate` a second, and
//! reports them back in groups, in the background (a report under way holds up no start). The
//! sweeps, keep-alive and `jobs run` are such workers; any number of them, in any process on
//! the store, share a job.
//!
//! With `refresh_in_worker`, claims hand users out unrefreshed and each user's refresh is the
//! first part of its work, in its place of the window: a place freed by one refresh is filled
//! by the next user at once, whatever the rest of its batch does.
//!
//! A stop (the watch turning true) claims nothing more, waits for a claim under way, lets the
//! users started finish, reports them and gives back the users claimed and not started (not
//! refreshed either), so that a rerun or another worker takes them at once. A job cancelled
//! under the worker is a stop too, told apart in the summary by the job's state: a claim or a
//! report says so, and before starting users the worker reads the job's state (at most every
//! `STATE_CHECK`), so that no user starts once the cancel is seen. A worker that dies leaves
//! its users to their lease. When the claim itself does the users' work (keep-alive's
//! claim refreshes), the worker claims one batch at a time, reports it as soon as it is
//! through, and on a stop finishes what it claimed rather than give back users already
//! refreshed.

use super::{Batch, ClaimRequest, HandedOut, JobError, Jobs, RefreshFailed, Report, ToRefresh};
use grantkeeper_core::clock::sleep_until;
use grantkeeper_core::{Clock, Stopwatch};
use grantkeeper_store::{ItemState, JobRecord, JobState};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// After a claim that found nothing due, the next one comes this soon, then twice as late
/// after each further empty one (up to `max_wait`, and never after the claim's `retry_after`):
/// the job's last users, held by other workers, are usually reported within moments, and a
/// worker waiting its whole `max_wait` for the job's end would hold up whoever waits for it.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// Before starting users, the worker reads its job's state when it last did longer ago than
/// this: a cancel stops the starts within that time, whatever the claims and reports say (a
/// worker whose users take long claims and reports seldom), for a few reads a second at most.
const STATE_CHECK: Duration = Duration::from_millis(250);

/// How a worker works.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Users worked on at once (at least 1).
    pub concurrency: usize,
    /// Users per claim (1 to [`super::MAX_CLAIM`]).
    pub batch: u32,
    /// None: the job's lease.
    pub lease: Option<Duration>,
    /// Users started a second at most; None: as fast as the window allows.
    pub start_rate: Option<f64>,
    /// The worker's name, for people.
    pub name: String,
    /// When a claim finds nothing due while the job still runs (other workers hold its last
    /// users, or users are due later): wait and claim again (true), or end (false).
    pub linger: bool,
    /// The longest wait between two empty claims.
    pub max_wait: Duration,
    /// The claim does each user's work (the job's kind refreshes every user as it is handed
    /// out): claim a batch only once the last one is reported, and on a stop finish the users
    /// claimed instead of giving them back (their work is done; given back, it would be done
    /// twice).
    pub work_in_claim: bool,
    /// Claim users unrefreshed ([`Jobs::claim_unrefreshed`]) and refresh each in its place of
    /// the window before `work` is called with its token: claims answer at once and are made
    /// ahead of the work, and on a stop the users not started are given back unrefreshed.
    pub refresh_in_worker: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 8,
            batch: 100,
            lease: None,
            start_rate: None,
            name: "worker".to_owned(),
            linger: true,
            max_wait: Duration::from_secs(2),
            work_in_claim: false,
            refresh_in_worker: false,
        }
    }
}

/// What a worker's work made of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkOutcome {
    Done(String),
    /// Offer the user again after this delay.
    Retry(Duration, String),
    Failed(String),
    /// The user's grant cannot serve the work (`reason`: one of the skip reasons of
    /// [`grantkeeper_store::SKIP_REASONS`]): settled `skipped`.
    Skipped(String, String),
}

/// One user settled, as the worker saw it: worked on here, or settled by a claim of this
/// worker (skipped, failed).
#[derive(Clone, Debug)]
pub struct ItemEvent {
    pub sub: String,
    /// `Done`, `Failed`, `Skipped`, or `Pending` (offered again later).
    pub state: ItemState,
    /// Why, for skipped and failed users (`revoked`, `invalid_grant`, `worker`, ...).
    pub reason: Option<String>,
    /// For people; never a token.
    pub detail: String,
}

/// The end of one worker's run.
#[derive(Clone, Debug)]
pub struct WorkerSummary {
    /// Every user this worker settled, in order.
    pub settled: u64,
    /// The job as it is at the end.
    pub job: JobRecord,
    /// A stop ended it early (a cancel of the job shows in `job.state`, not here).
    pub interrupted: bool,
    pub elapsed: Duration,
    /// The smallest `sub` of this worker's first batch (handed out or settled by the claim):
    /// where in the job it came in.
    pub first_claimed: Option<String>,
}

/// At most one start per `interval`.
struct Pace {
    interval: Duration,
    /// The clock's monotonic reading.
    next: Duration,
}

impl Pace {
    fn new(rate: Option<f64>, clock: &dyn Clock) -> Option<Pace> {
        rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| Pace {
            interval: Duration::from_secs_f64(1.0 / r.max(1e-6)),
            next: clock.monotonic(),
        })
    }

    async fn admit(&mut self, clock: &dyn Clock) {
        let at = self.next.max(clock.monotonic());
        sleep_until(clock, at).await;
        self.next = at + self.interval;
    }
}

/// A claimed user waiting to start.
struct Queued {
    lease: String,
    item: Claimed,
}

/// A user as a claim handed it out.
enum Claimed {
    /// With its token.
    Token(HandedOut),
    /// To be refreshed first.
    Refresh(ToRefresh),
}

impl Claimed {
    fn id(&self) -> i64 {
        match self {
            Claimed::Token(i) => i.id,
            Claimed::Refresh(i) => i.id,
        }
    }
}

/// A completion not reported yet.
struct Unreported {
    id: i64,
    report: Report,
    event: ItemEvent,
}

struct Lease {
    /// Its users still queued or running.
    open: usize,
    /// The clock's monotonic reading.
    renewed: Duration,
    /// How long it lasts from a claim or a renewal.
    length: Duration,
}

/// A user's work ended.
struct Finished {
    lease: String,
    id: i64,
    sub: String,
    /// The offer it was: a retry on the job's last one fails the user.
    attempt: u32,
    outcome: WorkOutcome,
}

/// What a task of the window ended with.
enum Ran {
    Finished(Finished),
    /// A user refreshed, its work to start in the same place.
    Refreshed(String, HandedOut),
}

/// What woke the worker's loop.
enum Event {
    /// A task of the window ended (an error: it panicked or was cancelled; its user's lease
    /// runs out).
    Ran(Result<Ran, tokio::task::JoinError>),
    /// The claim under way answered.
    Claimed(Box<Result<Result<Batch, JobError>, tokio::task::JoinError>>),
    /// The report under way was answered: the users it recorded.
    Reported(Result<Flushed, tokio::task::JoinError>),
    /// A timer (the next claim, a report due) or the stop signal: look again.
    Tick,
}

/// Works on job `id` until it is finished (or, without `linger`, until nothing is due), or
/// until `stop`. `work` is called once per user handed out; `on_event` once per user settled.
pub async fn run<W, F>(
    jobs: &Jobs,
    id: i64,
    opts: WorkerOptions,
    mut stop: watch::Receiver<bool>,
    work: W,
    on_event: &(dyn Fn(&ItemEvent) + Send + Sync),
) -> Result<WorkerSummary, JobError>
where
    W: Fn(HandedOut) -> F,
    F: Future<Output = WorkOutcome> + Send + 'static,
{
    let started = Stopwatch::start();
    if opts.concurrency == 0 || !(1..=super::MAX_CLAIM).contains(&opts.batch) {
        return Err(JobError::Invalid(
            "a worker needs a concurrency of at least 1 and a batch of 1 to 500".to_owned(),
        ));
    }
    let mut w = Worker::new(jobs, id, opts, on_event);
    loop {
        if *stop.borrow() {
            w.interrupted = true;
        }
        w.claim_ahead();
        w.start_work(&work).await;
        w.report_if_due();
        renew(jobs, id, &mut w.leases).await;
        if w.is_through() {
            break;
        }
        match w.next_event(&mut stop).await {
            Event::Ran(done) => w.ran(done, &work),
            Event::Claimed(answer) => w.claimed(*answer),
            Event::Reported(events) => w.reported(events),
            Event::Tick => {}
        }
    }
    w.wind_down(&work).await;
    if let Some(e) = w.failure {
        return Err(e);
    }
    let job = jobs.progress(id).await?.job;
    Ok(WorkerSummary {
        settled: w.settled,
        job,
        interrupted: w.interrupted,
        elapsed: started.elapsed(),
        first_claimed: w.first_claimed,
    })
}

/// A worker between two turns of its loop: the users claimed and waiting, those in work, the
/// completions not reported yet, the claim under way.
struct Worker<'a> {
    jobs: &'a Jobs,
    id: i64,
    opts: WorkerOptions,
    on_event: &'a (dyn Fn(&ItemEvent) + Send + Sync),
    pace: Option<Pace>,
    queue: VecDeque<Queued>,
    running: JoinSet<Ran>,
    leases: HashMap<String, Lease>,
    unreported: HashMap<String, Vec<Unreported>>,
    /// The report under way.
    reporting: Option<tokio::task::JoinHandle<Flushed>>,
    claiming: Option<tokio::task::JoinHandle<Result<Batch, JobError>>>,
    /// The job's `max_attempts`, from its last claim.
    max_attempts: u32,
    /// The clock's monotonic reading.
    next_claim: Duration,
    /// Claims in a row that found nothing due.
    empty_claims: u32,
    /// No claim is made any more: the job ended, nothing is due without `linger`, or a claim
    /// failed.
    exhausted: bool,
    settled: u64,
    interrupted: bool,
    /// A claim, a report or a read of the job's state said that the job was cancelled: a stop.
    cancelled: bool,
    /// When the job's state was last read before starting users (the clock's monotonic
    /// reading).
    state_read: Option<Duration>,
    failure: Option<JobError>,
    first_claimed: Option<String>,
}

impl<'a> Worker<'a> {
    fn new(
        jobs: &'a Jobs,
        id: i64,
        opts: WorkerOptions,
        on_event: &'a (dyn Fn(&ItemEvent) + Send + Sync),
    ) -> Worker<'a> {
        Worker {
            jobs,
            id,
            pace: Pace::new(opts.start_rate, jobs.clock().as_ref()),
            opts,
            on_event,
            queue: VecDeque::new(),
            running: JoinSet::new(),
            leases: HashMap::new(),
            unreported: HashMap::new(),
            reporting: None,
            claiming: None,
            max_attempts: u32::MAX,
            next_claim: jobs.clock().monotonic(),
            empty_claims: 0,
            exhausted: false,
            settled: 0,
            interrupted: false,
            cancelled: false,
            state_read: None,
            failure: None,
            first_claimed: None,
        }
    }

    /// Whether the worker takes no more users: stopped, or its job cancelled.
    fn stopping(&self) -> bool {
        self.interrupted || self.cancelled
    }

    /// Whether the worker has room for another batch: its window is not full, or, when the
    /// claim is the work, the last batch is through and reported.
    fn room(&self) -> bool {
        if self.opts.work_in_claim {
            self.queue.is_empty()
                && self.running.is_empty()
                && self.unreported.is_empty()
                && self.reporting.is_none()
        } else {
            self.queue.len() < self.opts.concurrency
        }
    }

    /// Claims ahead, so that the window never runs dry while a batch is fetched; or, when the
    /// claim is the work, once the last batch is through and reported.
    fn claim_ahead(&mut self) {
        if self.stopping()
            || self.exhausted
            || self.claiming.is_some()
            || !self.room()
            || self.jobs.clock().monotonic() < self.next_claim
        {
            return;
        }
        let request = ClaimRequest {
            max: self.opts.batch,
            lease: self.opts.lease,
            worker: Some(self.opts.name.clone()),
        };
        let (jobs, id) = (self.jobs.clone(), self.id);
        let unrefreshed = self.opts.refresh_in_worker;
        self.claiming = Some(tokio::spawn(async move {
            if unrefreshed {
                jobs.claim_unrefreshed(id, request).await
            } else {
                jobs.claim(id, request).await
            }
        }));
    }

    /// Starts what the window has room for (after a stop too, when the claim did the work).
    async fn start_work<W, F>(&mut self, work: &W)
    where
        W: Fn(HandedOut) -> F,
        F: Future<Output = WorkOutcome> + Send + 'static,
    {
        while (!self.stopping() || self.opts.work_in_claim)
            && self.running.len() < self.opts.concurrency
        {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            let jobs = self.jobs;
            if let Some(pace) = self.pace.as_mut() {
                pace.admit(jobs.clock().as_ref()).await;
            }
            // (Users whose claim did their work are finished whatever becomes of the job.)
            if !self.opts.work_in_claim && self.cancel_seen().await {
                self.queue.push_front(next);
                break;
            }
            match next.item {
                Claimed::Token(item) => self.start(next.lease, item, work),
                Claimed::Refresh(item) => {
                    let (jobs, lease) = (jobs.clone(), next.lease);
                    self.running.spawn(async move {
                        match jobs.refresh_handed(&item).await {
                            Ok(handed) => Ran::Refreshed(lease, handed),
                            Err(failed) => Ran::Finished(Finished {
                                lease,
                                id: item.id,
                                sub: item.sub,
                                attempt: item.attempt,
                                outcome: match failed {
                                    RefreshFailed::Skip { reason, detail } => {
                                        WorkOutcome::Skipped(reason, detail)
                                    }
                                    RefreshFailed::Retry { after, detail } => {
                                        WorkOutcome::Retry(after, detail)
                                    }
                                },
                            }),
                        }
                    });
                }
            }
        }
    }

    /// Starts a user's work in a place of the window.
    fn start<W, F>(&mut self, lease: String, item: HandedOut, work: &W)
    where
        W: Fn(HandedOut) -> F,
        F: Future<Output = WorkOutcome> + Send + 'static,
    {
        let (id, sub, attempt) = (item.id, item.sub.clone(), item.attempt);
        let future = work(item);
        self.running.spawn(async move {
            Ran::Finished(Finished {
                lease,
                id,
                sub,
                attempt,
                outcome: future.await,
            })
        });
    }

    /// Sends the completions waiting in the background, one report at a time: those that end
    /// while a report is under way go together in the next, so that reports group themselves
    /// as the pace grows and each user is told soon after it ends.
    fn report_if_due(&mut self) {
        if self.reporting.is_some() || self.unreported.is_empty() {
            return;
        }
        let (jobs, id) = (self.jobs.clone(), self.id);
        let unreported = std::mem::take(&mut self.unreported);
        self.reporting = Some(tokio::spawn(
            async move { flush(&jobs, id, unreported).await },
        ));
    }

    /// Whether the job is known to be cancelled, its state read first when it was last read
    /// [`STATE_CHECK`] ago or longer. A failed read is not a cancel: the work goes on.
    async fn cancel_seen(&mut self) -> bool {
        let now = self.jobs.clock().monotonic();
        if !self.cancelled
            && self
                .state_read
                .is_none_or(|at| now.saturating_sub(at) >= STATE_CHECK)
        {
            self.state_read = Some(now);
            match self.jobs.state(self.id).await {
                Ok(state) => self.cancelled = state == JobState::Cancelled,
                Err(e) => {
                    tracing::warn!(job = self.id, error = %e, "could not read the job's state")
                }
            }
        }
        self.cancelled
    }

    /// Tells the users a report recorded; notes a job cancelled meanwhile.
    fn reported(&mut self, answer: Result<Flushed, tokio::task::JoinError>) {
        self.reporting = None;
        match answer {
            Ok(flushed) => {
                for e in &flushed.events {
                    (self.on_event)(e);
                }
                self.settled += flushed.events.len() as u64;
                self.cancelled |= flushed.cancelled;
            }
            Err(e) => {
                tracing::warn!(job = self.id, error = %e, "a report task ended abnormally; its users will be offered again");
            }
        }
    }

    /// Whether the loop ends: nothing in hand and nothing more to claim; or stopped (or the
    /// job cancelled), with nothing running, no claim under way (its users are leased, some
    /// refreshed) and, when the claim did the work, nothing claimed left to finish.
    fn is_through(&self) -> bool {
        let idle = self.running.is_empty() && self.queue.is_empty() && self.claiming.is_none();
        if idle && (self.stopping() || self.exhausted || self.failure.is_some()) {
            return true;
        }
        self.stopping()
            && self.running.is_empty()
            && self.claiming.is_none()
            && (self.queue.is_empty() || !self.opts.work_in_claim)
    }

    /// Waits for a user's work to end, the claim to answer, a timer or the stop signal.
    async fn next_event(&mut self, stop: &mut watch::Receiver<bool>) -> Event {
        let may_claim =
            self.claiming.is_none() && !self.exhausted && !self.stopping() && self.room();
        let wait_claim = sleep_until(self.jobs.clock().as_ref(), self.next_claim);
        tokio::select! {
            Some(done) = self.running.join_next(), if !self.running.is_empty() => Event::Ran(done),
            answer = answer_of(&mut self.claiming), if self.claiming.is_some() => Event::Claimed(Box::new(answer)),
            answer = answer_of(&mut self.reporting), if self.reporting.is_some() => Event::Reported(answer),
            () = wait_claim, if may_claim => Event::Tick,
            _ = stop.changed(), if !self.interrupted => Event::Tick,
        }
    }

    /// Keeps a user's outcome for the next report, or starts the work of a user refreshed
    /// (after a stop too: its refresh is done).
    fn ran<W, F>(&mut self, done: Result<Ran, tokio::task::JoinError>, work: &W)
    where
        W: Fn(HandedOut) -> F,
        F: Future<Output = WorkOutcome> + Send + 'static,
    {
        match done {
            Ok(Ran::Finished(finished)) => self.finished(finished),
            Ok(Ran::Refreshed(lease, item)) => self.start(lease, item, work),
            Err(e) => {
                tracing::error!(job = self.id, error = %e, "a worker's task ended abnormally; its user's lease will run out");
            }
        }
    }

    fn finished(&mut self, f: Finished) {
        let (report, event) = settle(f.sub, f.outcome, f.attempt >= self.max_attempts);
        if let Some(l) = self.leases.get_mut(&f.lease) {
            l.open = l.open.saturating_sub(1);
        }
        self.unreported
            .entry(f.lease)
            .or_default()
            .push(Unreported {
                id: f.id,
                report,
                event,
            });
    }

    /// Takes in a claim's answer: its users queued, those it settled told, or when it brought
    /// nothing, when to claim again (or that no claim is made any more).
    fn claimed(&mut self, answer: Result<Result<Batch, JobError>, tokio::task::JoinError>) {
        self.claiming = None;
        let batch = match answer {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!(job = self.id, error = %e, "claiming a batch failed");
                self.failure = Some(e);
                self.exhausted = true;
                return;
            }
            Err(e) => {
                self.failure = Some(JobError::Invalid(format!(
                    "the claim task ended abnormally: {e}"
                )));
                self.exhausted = true;
                return;
            }
        };
        self.max_attempts = batch.job.max_attempts;
        if batch.job.state == JobState::Cancelled {
            self.cancelled = true;
        }
        if self.first_claimed.is_none() {
            self.first_claimed = batch
                .items
                .iter()
                .map(|i| &i.sub)
                .chain(batch.to_refresh.iter().map(|i| &i.sub))
                .chain(batch.settled.iter().map(|s| &s.sub))
                .min()
                .cloned();
        }
        for s in &batch.settled {
            self.settled += 1;
            (self.on_event)(&ItemEvent {
                sub: s.sub.clone(),
                state: s.state,
                reason: Some(s.reason.clone()),
                detail: s.detail.clone(),
            });
        }
        if batch.items.is_empty() && batch.to_refresh.is_empty() {
            if batch.job.state != JobState::Running || !self.opts.linger {
                self.exhausted = true;
            }
            if batch.settled.is_empty() {
                self.empty_claims = self.empty_claims.saturating_add(1);
                let wait = batch
                    .retry_after
                    .unwrap_or(self.opts.max_wait)
                    .min(self.opts.max_wait)
                    .min(poll_after(self.empty_claims));
                self.next_claim = self.jobs.clock().monotonic() + wait.max(FIRST_POLL);
            }
            return;
        }
        self.empty_claims = 0;
        let length = Duration::try_from(batch.lease_until - self.jobs.clock().now())
            .unwrap_or(Duration::from_secs(1));
        self.leases.insert(
            batch.lease.clone(),
            Lease {
                open: batch.items.len() + batch.to_refresh.len(),
                renewed: self.jobs.clock().monotonic(),
                length,
            },
        );
        let handed = batch.items.into_iter().map(Claimed::Token);
        let to_refresh = batch.to_refresh.into_iter().map(Claimed::Refresh);
        for item in handed.chain(to_refresh) {
            self.queue.push_back(Queued {
                lease: batch.lease.clone(),
                item,
            });
        }
    }

    /// At the end: users claimed and not started go back at once (a rerun or another worker
    /// takes them), the users in work finish (a user refreshed has its work done), and every
    /// completion is reported.
    async fn wind_down<W, F>(&mut self, work: &W)
    where
        W: Fn(HandedOut) -> F,
        F: Future<Output = WorkOutcome> + Send + 'static,
    {
        self.give_back_queued().await;
        while let Some(done) = self.running.join_next().await {
            self.ran(done, work);
        }
        if let Some(report) = self.reporting.take() {
            let answer = report.await;
            self.reported(answer);
        }
        let flushed = flush(self.jobs, self.id, std::mem::take(&mut self.unreported)).await;
        self.reported(Ok(flushed));
    }

    /// Releases the users claimed and not started, a report per lease.
    async fn give_back_queued(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let mut by_lease: HashMap<String, Vec<(i64, Report)>> = HashMap::new();
        for q in self.queue.drain(..) {
            by_lease
                .entry(q.lease)
                .or_default()
                .push((q.item.id(), Report::Release));
        }
        for (lease, items) in by_lease {
            if let Err(e) = self.jobs.report(self.id, &lease, items).await {
                tracing::info!(job = self.id, error = %e, "could not give unstarted users back; their lease will run out");
            }
        }
    }
}

/// The wait before claiming again after `empty` empty claims in a row: [`FIRST_POLL`],
/// doubled after each further one.
fn poll_after(empty: u32) -> Duration {
    FIRST_POLL.saturating_mul(1 << empty.saturating_sub(1).min(16))
}

/// What a worker's outcome reports, and the event it makes once recorded (`last`: the user's
/// last offer, when a retry fails it).
fn settle(sub: String, outcome: WorkOutcome, last: bool) -> (Report, ItemEvent) {
    let event = |state, reason: Option<String>, detail| ItemEvent {
        sub,
        state,
        reason,
        detail,
    };
    match outcome {
        WorkOutcome::Done(detail) => (Report::Done, event(ItemState::Done, None, detail)),
        WorkOutcome::Retry(delay, detail) => (
            Report::Retry {
                delay: Some(delay),
                detail: Some(super::clip(&detail)),
            },
            if last {
                event(ItemState::Failed, Some("attempts".to_owned()), detail)
            } else {
                event(ItemState::Pending, Some("retry".to_owned()), detail)
            },
        ),
        WorkOutcome::Failed(detail) => (
            Report::Failed {
                detail: Some(super::clip(&detail)),
            },
            event(ItemState::Failed, Some("worker".to_owned()), detail),
        ),
        WorkOutcome::Skipped(reason, detail) => (
            Report::Skipped {
                reason: reason.clone(),
                detail: Some(super::clip(&detail)),
            },
            event(ItemState::Skipped, Some(reason), detail),
        ),
    }
}

/// What a flush of the completions came to.
#[derive(Default)]
struct Flushed {
    /// The users recorded.
    events: Vec<ItemEvent>,
    /// A report answered that the job was cancelled.
    cancelled: bool,
}

/// Reports every completion given, a report per lease. A lease lost (it ran out and another
/// worker took its users) drops its completions: they are that worker's now.
async fn flush(jobs: &Jobs, id: i64, unreported: HashMap<String, Vec<Unreported>>) -> Flushed {
    let mut flushed = Flushed::default();
    for (lease, items) in unreported {
        let reports: Vec<(i64, Report)> = items.iter().map(|u| (u.id, u.report.clone())).collect();
        match jobs.report(id, &lease, reports).await {
            Ok(answer) => {
                flushed.cancelled |= answer.job.state == JobState::Cancelled;
                flushed.events.extend(items.into_iter().map(|u| u.event));
            }
            Err(JobError::NotHeld) => {
                // Some may still be held: report them one by one.
                for u in items {
                    match jobs
                        .report(id, &lease, vec![(u.id, u.report.clone())])
                        .await
                    {
                        Ok(answer) => {
                            flushed.cancelled |= answer.job.state == JobState::Cancelled;
                            flushed.events.push(u.event);
                        }
                        Err(e) => tracing::info!(
                            job = id,
                            sub = %u.event.sub,
                            error = %e,
                            "a completion was not recorded: its lease ran out and the user is offered again"
                        ),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(job = id, error = %e, "could not report completions; their users will be offered again");
            }
        }
    }
    flushed
}

/// Extends the leases held past half their length.
async fn renew(jobs: &Jobs, id: i64, leases: &mut HashMap<String, Lease>) {
    leases.retain(|_, l| l.open > 0);
    for (name, lease) in leases.iter_mut() {
        let now = jobs.clock().monotonic();
        if now.saturating_sub(lease.renewed) >= lease.length / 2 {
            lease.renewed = now;
            if let Err(e) = jobs.renew(id, name, lease.length).await {
                tracing::warn!(job = id, error = %e, "could not extend a lease");
            }
        }
    }
}

/// The answer of a task under way (a claim, a report); never, when none is.
async fn answer_of<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task.as_mut() {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_after_an_empty_claim_start_soon_and_back_off() {
        assert_eq!(poll_after(1), FIRST_POLL);
        assert_eq!(poll_after(2), FIRST_POLL * 2);
        assert_eq!(poll_after(5), FIRST_POLL * 16);
        assert_eq!(poll_after(u32::MAX), FIRST_POLL * 65_536);
    }
}
