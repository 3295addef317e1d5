//! A worker inside this process: claims batches of a job, works on its users through a sliding
//! window of at most `concurrency` at once (a slow user holds one place, not a batch; the next
//! batch is claimed before this one runs dry), started at most `start_rate` a second, and
//! reports them back in groups. The sweeps, keep-alive and `jobs run` are such workers; any
//! number of them, in any process on the store, share a job.
//!
//! A stop (the watch turning true) claims nothing more, waits for a claim under way, lets the
//! users started finish, reports them and gives back the users claimed and not started, so that
//! a rerun or another worker takes them at once. A worker that dies leaves its users to their
//! lease. When the claim itself does the users' work (a refresh sweep's claim refreshes), the
//! worker claims one batch at a time, reports it as soon as it is through, and on a stop
//! finishes what it claimed rather than give back users already refreshed.

use super::{Batch, ClaimRequest, HandedOut, JobError, Jobs, Report};
use grantkeeper_store::{ItemState, JobRecord, JobState};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Reports are sent when this many completions wait...
const REPORT_EVERY: usize = 50;
/// ...or when the oldest waited this long.
const REPORT_AFTER: Duration = Duration::from_millis(200);

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
    /// A stop ended it early.
    pub interrupted: bool,
    pub elapsed: Duration,
    /// The smallest `sub` of this worker's first batch (handed out or settled by the claim):
    /// where in the job it came in.
    pub first_claimed: Option<String>,
}

/// At most one start per `interval`.
struct Pace {
    interval: Duration,
    next: tokio::time::Instant,
}

impl Pace {
    fn new(rate: Option<f64>) -> Option<Pace> {
        rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| Pace {
            interval: Duration::from_secs_f64(1.0 / r.max(1e-6)),
            next: tokio::time::Instant::now(),
        })
    }

    async fn admit(&mut self) {
        let at = self.next.max(tokio::time::Instant::now());
        tokio::time::sleep_until(at).await;
        self.next = at + self.interval;
    }
}

/// A claimed user waiting to start.
struct Queued {
    lease: String,
    item: HandedOut,
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
    renewed: Instant,
    /// How long it lasts from a claim or a renewal.
    length: Duration,
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
    let started = Instant::now();
    if opts.concurrency == 0 || !(1..=super::MAX_CLAIM).contains(&opts.batch) {
        return Err(JobError::Invalid(
            "a worker needs a concurrency of at least 1 and a batch of 1 to 500".to_owned(),
        ));
    }
    let mut pace = Pace::new(opts.start_rate);
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut running: JoinSet<(String, i64, String, WorkOutcome)> = JoinSet::new();
    let mut leases: HashMap<String, Lease> = HashMap::new();
    let mut unreported: HashMap<String, Vec<Unreported>> = HashMap::new();
    let mut oldest_unreported: Option<Instant> = None;
    let mut claiming: Option<tokio::task::JoinHandle<Result<Batch, JobError>>> = None;
    let mut next_claim = tokio::time::Instant::now();
    let mut exhausted = false;
    let mut settled = 0u64;
    let mut job_state = JobState::Running;
    let mut interrupted = false;
    let lease_for = opts.lease;
    let mut failure: Option<JobError> = None;
    let mut first_claimed: Option<String> = None;

    loop {
        if *stop.borrow() && !interrupted {
            interrupted = true;
        }
        // Claim ahead, so that the window never runs dry while a batch is fetched; or, when the
        // claim is the work, once the last batch is through and reported.
        if !interrupted
            && !exhausted
            && claiming.is_none()
            && room(&opts, &queue, &running, &unreported)
            && tokio::time::Instant::now() >= next_claim
        {
            let (jobs, name, batch) = (jobs.clone(), opts.name.clone(), opts.batch);
            claiming = Some(tokio::spawn(async move {
                jobs.claim(
                    id,
                    ClaimRequest {
                        max: batch,
                        lease: lease_for,
                        worker: Some(name),
                    },
                )
                .await
            }));
        }
        // Start what the window has room for (after a stop too, when the claim did the work).
        while (!interrupted || opts.work_in_claim) && running.len() < opts.concurrency {
            let Some(next) = queue.pop_front() else { break };
            if let Some(pace) = pace.as_mut() {
                pace.admit().await;
            }
            let future = work(next.item.clone());
            let (lease, item_id, sub) = (next.lease, next.item.id, next.item.sub);
            running.spawn(async move { (lease, item_id, sub, future.await) });
        }
        // With nothing in hand, nothing is gained by waiting to report.
        let flush_due = oldest_unreported.is_some_and(|t| t.elapsed() >= REPORT_AFTER)
            || unreported.values().map(Vec::len).sum::<usize>() >= REPORT_EVERY
            || (oldest_unreported.is_some() && running.is_empty() && queue.is_empty());
        if flush_due {
            settled += flush(jobs, id, &mut unreported, on_event).await;
            oldest_unreported = None;
        }
        renew(jobs, id, &mut leases).await;

        let idle = running.is_empty() && queue.is_empty() && claiming.is_none();
        if idle && (interrupted || exhausted || failure.is_some()) {
            break;
        }
        // Stopped: a claim under way is waited for (its users are leased, some refreshed).
        if interrupted
            && running.is_empty()
            && claiming.is_none()
            && (queue.is_empty() || !opts.work_in_claim)
        {
            break;
        }

        let wait_claim = tokio::time::sleep_until(next_claim);
        let may_claim = room(&opts, &queue, &running, &unreported);
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((lease, item_id, sub, outcome)) = done {
                    let (report, event) = settle(sub, outcome);
                    if let Some(l) = leases.get_mut(&lease) {
                        l.open = l.open.saturating_sub(1);
                    }
                    unreported.entry(lease).or_default().push(Unreported { id: item_id, report, event });
                    oldest_unreported.get_or_insert_with(Instant::now);
                }
            }
            answer = claimed(&mut claiming), if claiming.is_some() => {
                claiming = None;
                match answer {
                    Ok(Ok(batch)) => {
                        job_state = batch.job.state;
                        if first_claimed.is_none() {
                            first_claimed = batch.items.iter().map(|i| &i.sub)
                                .chain(batch.settled.iter().map(|s| &s.sub))
                                .min()
                                .cloned();
                        }
                        for s in &batch.settled {
                            settled += 1;
                            on_event(&ItemEvent { sub: s.sub.clone(), state: s.state, reason: Some(s.reason.clone()), detail: s.detail.clone() });
                        }
                        if batch.items.is_empty() {
                            if batch.job.state != JobState::Running || !opts.linger {
                                exhausted = batch.job.state != JobState::Running || !opts.linger;
                            }
                            if batch.settled.is_empty() {
                                let wait = batch.retry_after.unwrap_or(opts.max_wait).min(opts.max_wait);
                                next_claim = tokio::time::Instant::now() + wait.max(Duration::from_millis(50));
                            }
                        } else {
                            let length = Duration::try_from(batch.lease_until - jobs.clock().now())
                                .unwrap_or(Duration::from_secs(1));
                            leases.insert(batch.lease.clone(), Lease { open: batch.items.len(), renewed: Instant::now(), length });
                            for item in batch.items {
                                queue.push_back(Queued { lease: batch.lease.clone(), item });
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(job = id, error = %e, "claiming a batch failed");
                        failure = Some(e);
                        exhausted = true;
                    }
                    Err(e) => {
                        failure = Some(JobError::Invalid(format!("the claim task ended abnormally: {e}")));
                        exhausted = true;
                    }
                }
            }
            () = wait_claim, if claiming.is_none() && !exhausted && !interrupted && may_claim => {}
            () = tokio::time::sleep(REPORT_AFTER), if oldest_unreported.is_some() => {}
            _ = stop.changed(), if !interrupted => {}
        }
    }

    // Users claimed and not started go back at once; completions are reported.
    if !queue.is_empty() {
        let mut by_lease: HashMap<String, Vec<(i64, Report)>> = HashMap::new();
        for q in queue.drain(..) {
            by_lease
                .entry(q.lease)
                .or_default()
                .push((q.item.id, Report::Release));
        }
        for (lease, items) in by_lease {
            if let Err(e) = jobs.report(id, &lease, items).await {
                tracing::info!(job = id, error = %e, "could not give unstarted users back; their lease will run out");
            }
        }
    }
    while let Some(done) = running.join_next().await {
        if let Ok((lease, item_id, sub, outcome)) = done {
            let (report, event) = settle(sub, outcome);
            unreported.entry(lease).or_default().push(Unreported {
                id: item_id,
                report,
                event,
            });
        }
    }
    settled += flush(jobs, id, &mut unreported, on_event).await;
    if let Some(e) = failure {
        return Err(e);
    }
    let job = jobs.progress(id).await?.job;
    let _ = job_state;
    Ok(WorkerSummary {
        settled,
        job,
        interrupted,
        elapsed: started.elapsed(),
        first_claimed,
    })
}

/// Whether the worker has room for another batch: its window is not full, or, when the claim is
/// the work, the last batch is through and reported.
fn room<T>(
    opts: &WorkerOptions,
    queue: &VecDeque<Queued>,
    running: &JoinSet<T>,
    unreported: &HashMap<String, Vec<Unreported>>,
) -> bool {
    if opts.work_in_claim {
        queue.is_empty() && running.is_empty() && unreported.is_empty()
    } else {
        queue.len() < opts.concurrency
    }
}

/// What a worker's outcome reports, and the event it makes once recorded.
fn settle(sub: String, outcome: WorkOutcome) -> (Report, ItemEvent) {
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
            event(ItemState::Pending, Some("retry".to_owned()), detail),
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

/// Reports every completion waiting, a report per lease; returns how many were recorded. A
/// lease lost (it ran out and another worker took its users) drops its completions: they are
/// that worker's now.
async fn flush(
    jobs: &Jobs,
    id: i64,
    unreported: &mut HashMap<String, Vec<Unreported>>,
    on_event: &(dyn Fn(&ItemEvent) + Send + Sync),
) -> u64 {
    let mut recorded = 0;
    for (lease, items) in unreported.drain() {
        let reports: Vec<(i64, Report)> = items.iter().map(|u| (u.id, u.report.clone())).collect();
        match jobs.report(id, &lease, reports).await {
            Ok(_) => {
                for u in &items {
                    on_event(&u.event);
                }
                recorded += items.len() as u64;
            }
            Err(JobError::NotHeld) => {
                // Some may still be held: report them one by one.
                for u in items {
                    match jobs
                        .report(id, &lease, vec![(u.id, u.report.clone())])
                        .await
                    {
                        Ok(_) => {
                            on_event(&u.event);
                            recorded += 1;
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
    recorded
}

/// Extends the leases held past half their length.
async fn renew(jobs: &Jobs, id: i64, leases: &mut HashMap<String, Lease>) {
    leases.retain(|_, l| l.open > 0);
    for (name, lease) in leases.iter_mut() {
        if lease.renewed.elapsed() >= lease.length / 2 {
            lease.renewed = Instant::now();
            if let Err(e) = jobs.renew(id, name, lease.length).await {
                tracing::warn!(job = id, error = %e, "could not extend a lease");
            }
        }
    }
}

/// The claim under way's answer; never, when none is.
async fn claimed<T>(
    claiming: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match claiming.as_mut() {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
