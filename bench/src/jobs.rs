//! The jobs figure: N users worked on by W workers over `/v1/jobs` (real HTTP on 127.0.0.1, the
//! server in this process on SQLite), each worker claiming batches of B users and working on at
//! most B at once, each user's work waiting `latency` ms (the app's upstream call, the part
//! grantkeeper cannot shorten). The floor is the ideal N x latency / (W x B); the figure is
//! ideal / achieved. Every accepted `done` report is counted per user: exactly one each.
//!
//! A second run kills one worker halfway (its task dropped, as a process that dies: its users
//! stay leased, its last completions unreported); the others finish its users once their
//! lease ends, each user still completed exactly once.

use crate::Ctx;
use crate::report::{Row, Verdict, thousands};
use crate::sweep::population;
use anyhow::Context;
use grantkeeper_core::ExposeSecret;
use grantkeeper_server::apikeys::{KeyScope, create_api_key};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Reports go out when this many completions wait, or when the oldest waited this long.
const REPORT_EVERY: usize = 50;
const REPORT_AFTER: Duration = Duration::from_millis(50);
/// After a claim that found nothing due, the next comes this soon, then twice as late after
/// each further empty one, up to `POLL_MAX` (and never after the claim's `retry_after`): the
/// job's last users, in other workers' hands, are reported within moments.
const FIRST_POLL: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);
/// The longest either run may take: the scenario stays bounded however slow the machine.
const RUN_LIMIT: Duration = Duration::from_secs(120);

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let users = ctx.opts.jobs_users;
    let p = population(users, 32).await?;
    let key = create_api_key(
        p.app.store().as_ref(),
        p.app.clock().as_ref(),
        "bench",
        &[KeyScope::Jobs],
    )
    .await?
    .1;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = grantkeeper_server::http::router(p.app.clone());
    tokio::spawn(
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
        url,
        key: key.expose_secret().to_owned(),
    };
    let o = &ctx.opts;
    let latency = Duration::from_millis(o.jobs_latency_ms);
    // Every worker has `batch` users in work at once: the total concurrency is workers x
    // batch, and with every place busy from start to end the run takes N x latency / that.
    let places = u32::try_from(o.jobs_workers * o.jobs_batch)?;
    let ideal = latency * u32::try_from(users)? / places;

    // All workers alive.
    let run = tokio::time::timeout(RUN_LIMIT, one_run(&api, o, latency, None))
        .await
        .context("the jobs run took longer than its limit")??;
    let once = run.exactly_once(users);
    let ratio = ideal.as_secs_f64() / run.elapsed.as_secs_f64();
    eprintln!("{}", run.breakdown(ideal, places, latency, users));
    let mut row = Row::at_least(
        "jobs",
        format!(
            "{} users, {} ms of work each, {} workers claiming batches of {} over HTTP",
            thousands(users as u64),
            o.jobs_latency_ms,
            o.jobs_workers,
            o.jobs_batch
        ),
        format!(
            "ideal N x latency / total concurrency ({} workers x {} in work at once): {:.2} s",
            o.jobs_workers,
            o.jobs_batch,
            ideal.as_secs_f64()
        ),
        format!(
            "{:.2} s (last completion at {:.2} s); {}; {} claims ({} empty) answered in {:.0} ms on average, {} reports in {:.0} ms; {}",
            run.elapsed.as_secs_f64(),
            run.job_end.as_secs_f64(),
            run.describe(users),
            run.claims,
            run.empty_claims,
            run.claim_ms,
            run.reports,
            run.report_ms,
            run.places_line(places),
        ),
        ratio,
        0.9,
    );
    if !once {
        row.verdict = Verdict::Missed;
    }
    ctx.table.add(row);

    // One worker killed once half the users are done.
    let lease = Duration::from_secs(o.jobs_lease_secs);
    let run = tokio::time::timeout(RUN_LIMIT, one_run(&api, o, latency, Some(users as u64 / 2)))
        .await
        .context("the jobs run with a killed worker took longer than its limit")??;
    let once = run.exactly_once(users);
    let killed_at = run.killed_at.unwrap_or_default();
    ctx.table.add(Row {
        scenario: "jobs",
        case: format!(
            "the same, one worker killed after {} completions, lease {} s",
            thousands(users as u64 / 2),
            lease.as_secs()
        ),
        floor: format!(
            "ideal as above plus one lease: {:.2} s",
            (ideal + lease).as_secs_f64()
        ),
        ours: format!(
            "{:.2} s (killed at {:.2} s, its last users finished by the others {:.2} s after); {}",
            run.elapsed.as_secs_f64(),
            killed_at.as_secs_f64(),
            run.last_after_kill.as_secs_f64(),
            run.describe(users),
        ),
        ratio: Some((ideal + lease).as_secs_f64() / run.elapsed.as_secs_f64()),
        goal: "every user done exactly once".to_owned(),
        verdict: if once { Verdict::Met } else { Verdict::Missed },
    });
    Ok(())
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    async fn call(&self, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let request = match body {
            Some(body) => self.http.post(format!("{}{path}", self.url)).json(&body),
            None => self.http.get(format!("{}{path}", self.url)),
        };
        let answer = request.bearer_auth(&self.key).send().await?;
        let status = answer.status().as_u16();
        Ok((status, answer.json().await.unwrap_or(Value::Null)))
    }
}

/// What one run did.
struct RunResult {
    elapsed: Duration,
    /// Accepted `done` reports per user, over every worker.
    completions: HashMap<String, u32>,
    job: Value,
    claims: u64,
    reports: u64,
    /// Completions a report could not record (the lease had run out).
    lost: u64,
    killed_at: Option<Duration>,
    /// From the kill to the last completion.
    last_after_kill: Duration,
    /// Mean time from sending a claim, or a report, to its answer.
    claim_ms: f64,
    report_ms: f64,
    empty_claims: u64,
    /// When the last completion was accepted, from the start: the job's own end.
    job_end: Duration,
    /// Free places over every worker, by cause.
    idle: Idle,
    /// The users' work beyond `latency`, summed over users.
    late: Duration,
    /// CPU time of this process (server and workers) during the run.
    cpu: Duration,
}

impl RunResult {
    /// The free places in words: lost wall time (place-seconds over every place) by cause.
    fn places_line(&self, places: u32) -> String {
        let lost = |place_s: f64| place_s * 1000.0 / f64::from(places);
        format!(
            "places idle {:.0} ms of the run (start {:.0}, claim under way {:.0}, polling {:.0}, queued {:.0}, after the worker ended {:.0}), users' work late {:.0} ms; CPU {:.2} s",
            lost(self.idle.total()),
            lost(self.idle.start),
            lost(self.idle.claim),
            lost(self.idle.poll),
            lost(self.idle.queued),
            lost(self.idle.end),
            self.late.as_secs_f64() * 1000.0 / f64::from(places),
            self.cpu.as_secs_f64(),
        )
    }

    /// Where the run's time went, for the person running the bench: the run is the ideal plus
    /// the places' idle time plus the users' work beyond its latency, over every place.
    fn breakdown(&self, ideal: Duration, places: u32, latency: Duration, users: usize) -> String {
        let work = latency.as_secs_f64() * users as f64;
        let accounted = (work + self.late.as_secs_f64() + self.idle.total()) / f64::from(places);
        format!(
            "jobs: {:.3} s against the ideal {:.3} s; accounted {:.3} s = ideal + idle {:.3} s + late {:.3} s; idle place-seconds: {:?}; CPU {:.2} s ({:.0} us a user); {} claims, {} empty",
            self.elapsed.as_secs_f64(),
            ideal.as_secs_f64(),
            accounted,
            self.idle.total() / f64::from(places),
            self.late.as_secs_f64() / f64::from(places),
            self.idle,
            self.cpu.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / users as f64,
            self.claims,
            self.empty_claims,
        )
    }

    fn exactly_once(&self, users: usize) -> bool {
        self.completions.len() == users
            && self.completions.values().all(|n| *n == 1)
            && self.job["state"] == "finished"
            && self.job["progress"]["done"] == users
    }

    fn describe(&self, users: usize) -> String {
        let twice = self.completions.values().filter(|n| **n > 1).count();
        format!(
            "{} of {} users completed, {} more than once, {} completions refused (lease lost); job {} with {} done",
            thousands(self.completions.len() as u64),
            thousands(users as u64),
            twice,
            self.lost,
            self.job["state"].as_str().unwrap_or("?"),
            self.job["progress"]["done"]
        )
    }
}

/// An answer of the API and how long it took.
type Answered = ((u16, Value), Duration);

/// What one worker did.
#[derive(Default)]
struct WorkerResult {
    completed: Vec<String>,
    claims: u64,
    /// Claims answered without a user (nothing due: the job's last users held elsewhere).
    empty_claims: u64,
    reports: u64,
    lost: u64,
    /// Time from sending to answer, summed.
    claim_time: Duration,
    report_time: Duration,
    idle: Idle,
    /// Each user's work as it took, beyond `latency`, summed: the timer's and the scheduler's
    /// lateness, which the machine's load sets.
    late: Duration,
    /// When the worker returned, from the run's start.
    ended: Duration,
}

/// Where a worker's free places went while it ran: place-seconds (one place free for one
/// second is 1) by what the worker was waiting for. A worker's places are its window (`batch`
/// users in work at once); the ideal has every place busy from the start to the end.
#[derive(Default, Clone, Copy, Debug)]
struct Idle {
    /// Before its first batch arrived.
    start: f64,
    /// Its window not full, nothing queued, a claim under way (the window ran dry).
    claim: f64,
    /// Its window not full, nothing queued, no claim under way: waiting to claim again after
    /// an empty claim (the job's last users are in other workers' hands).
    poll: f64,
    /// Users queued but not started (the loop's own turn).
    queued: f64,
    /// After the worker returned, until the run's end (the last worker's return).
    end: f64,
}

impl Idle {
    fn add(&mut self, other: &Idle) {
        self.start += other.start;
        self.claim += other.claim;
        self.poll += other.poll;
        self.queued += other.queued;
        self.end += other.end;
    }

    fn total(&self) -> f64 {
        self.start + self.claim + self.poll + self.queued + self.end
    }
}

/// This process's CPU time so far (user and system, every thread), from /proc (Linux; zero
/// elsewhere). The server runs in this process too, so this is both sides of the API.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are the 14th and 15th fields (the 12th and 13th after the name), in
    // clock ticks of 1/100 s.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Makes a job over every user and runs the workers to its end; with `kill_after`, the first
/// worker dies once that many users are done across all.
async fn one_run(
    api: &Api,
    o: &crate::Opts,
    latency: Duration,
    kill_after: Option<u64>,
) -> anyhow::Result<RunResult> {
    let (status, job) = api
        .call(
            "/v1/jobs",
            Some(json!({"name": "bench", "lease": o.jobs_lease_secs, "min_ttl": 60})),
        )
        .await?;
    anyhow::ensure!(status == 201, "the job was not made: {job}");
    let id = job["id"].as_i64().context("a job id")?;
    let done = Arc::new(AtomicU64::new(0));
    let last_done = Arc::new(std::sync::Mutex::new(Instant::now()));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for n in 0..o.jobs_workers {
        let (api, done, last_done) = (api.clone(), done.clone(), last_done.clone());
        let kill = kill_after.filter(|_| n == 0);
        let batch = o.jobs_batch;
        workers.spawn(async move {
            (
                n,
                worker(&api, id, batch, latency, kill, &done, &last_done, started).await,
            )
        });
    }
    let mut completions: HashMap<String, u32> = HashMap::new();
    let (mut claims, mut reports, mut lost, mut empty_claims) = (0, 0, 0, 0);
    let mut ended = Vec::new();
    let mut idle = Idle::default();
    let mut late = Duration::ZERO;
    let (mut claim_time, mut report_time) = (Duration::ZERO, Duration::ZERO);
    let mut killed_at = None;
    while let Some(joined) = workers.join_next().await {
        let (n, result) = joined?;
        let result = result?;
        if n == 0 && kill_after.is_some() {
            killed_at = Some(started.elapsed());
        }
        for sub in result.completed {
            *completions.entry(sub).or_default() += 1;
        }
        claims += result.claims;
        reports += result.reports;
        lost += result.lost;
        claim_time += result.claim_time;
        report_time += result.report_time;
        empty_claims += result.empty_claims;
        idle.add(&result.idle);
        late += result.late;
        // A killed worker's places are gone with it, not idle.
        if !(n == 0 && kill_after.is_some()) {
            ended.push(result.ended);
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let places = o.jobs_batch as f64;
    idle.end = ended
        .iter()
        .map(|e| elapsed.saturating_sub(*e).as_secs_f64() * places)
        .sum();
    let last = *last_done.lock().unwrap_or_else(|e| e.into_inner());
    let last_after_kill = killed_at
        .map(|k| (last - started).saturating_sub(k))
        .unwrap_or_default();
    let (_, job) = api.call(&format!("/v1/jobs/{id}"), None).await?;
    Ok(RunResult {
        elapsed,
        completions,
        job,
        claims,
        reports,
        lost,
        killed_at,
        last_after_kill,
        claim_ms: claim_time.as_secs_f64() * 1000.0 / claims.max(1) as f64,
        report_ms: report_time.as_secs_f64() * 1000.0 / reports.max(1) as f64,
        empty_claims,
        job_end: last.saturating_duration_since(started),
        idle,
        late,
        cpu,
    })
}

/// A worker over HTTP: at most `batch` users in work at once, the next batch claimed while
/// the window still has work (so that it never runs dry waiting for a claim), completions
/// reported in groups without stopping the work, and after an empty claim the next one soon,
/// then less and less often. With `kill`, it returns abruptly once that
/// many users are done across all workers: its users in work, queued or unreported are left
/// to their lease.
#[allow(clippy::too_many_arguments)] // the run's shared counters, named by the caller
async fn worker(
    api: &Api,
    job: i64,
    batch: usize,
    latency: Duration,
    kill: Option<u64>,
    done: &AtomicU64,
    last_done: &std::sync::Mutex<Instant>,
    run_started: Instant,
) -> anyhow::Result<WorkerResult> {
    let mut out = WorkerResult::default();
    let mut queue: VecDeque<(String, i64, String)> = VecDeque::new();
    let mut working: JoinSet<(String, i64, String, Duration)> = JoinSet::new();
    let mut first_batch = false;
    let mut claiming: Option<tokio::task::JoinHandle<anyhow::Result<Answered>>> = None;
    let mut reporting: JoinSet<anyhow::Result<(u16, Vec<String>, Duration)>> = JoinSet::new();
    let mut unreported: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    let mut oldest: Option<Instant> = None;
    let mut finished = false;
    let mut next_claim = tokio::time::Instant::now();
    let mut empty_in_a_row = 0u32;
    loop {
        if let Some(kill) = kill
            && done.load(Ordering::Relaxed) >= kill
        {
            // Reports already sent reach the server whatever becomes of their sender: their
            // answers are awaited, so that their users count as completed; nothing else is.
            working.abort_all();
            if let Some(c) = claiming {
                c.abort();
            }
            while let Some(r) = reporting.join_next().await {
                let (status, subs, _) = r??;
                if status == 200 {
                    out.completed.extend(subs);
                }
            }
            out.ended = run_started.elapsed();
            return Ok(out);
        }
        if !finished
            && claiming.is_none()
            && queue.len() < batch
            && tokio::time::Instant::now() >= next_claim
        {
            let api = api.clone();
            let max = batch;
            claiming = Some(tokio::spawn(async move {
                let sent = Instant::now();
                let answer = api
                    .call(
                        &format!("/v1/jobs/{job}/claim"),
                        Some(json!({"max": max, "worker": "bench"})),
                    )
                    .await?;
                Ok((answer, sent.elapsed()))
            }));
            out.claims += 1;
        }
        while working.len() < batch {
            let Some((lease, id, sub)) = queue.pop_front() else {
                break;
            };
            working.spawn(async move {
                // The user's work: an upstream call that takes `latency`.
                let began = Instant::now();
                tokio::time::sleep(latency).await;
                (lease, id, sub, began.elapsed().saturating_sub(latency))
            });
        }
        let waiting: usize = unreported.values().map(Vec::len).sum();
        if waiting >= REPORT_EVERY
            || (waiting > 0 && oldest.is_some_and(|t| t.elapsed() >= REPORT_AFTER))
            || (waiting > 0 && working.is_empty() && queue.is_empty())
        {
            for (lease, items) in unreported.drain() {
                let api = api.clone();
                out.reports += 1;
                reporting.spawn(async move {
                    let sent = Instant::now();
                    let body = json!({"lease": lease, "items": items.iter().map(|(id, _)| json!({"id": id, "outcome": "done"})).collect::<Vec<_>>()});
                    let (status, _) = api
                        .call(&format!("/v1/jobs/{job}/reports"), Some(body))
                        .await?;
                    Ok((status, items.into_iter().map(|(_, sub)| sub).collect(), sent.elapsed()))
                });
            }
            oldest = None;
        }
        if finished
            && working.is_empty()
            && queue.is_empty()
            && unreported.is_empty()
            && reporting.is_empty()
            && claiming.is_none()
        {
            out.ended = run_started.elapsed();
            return Ok(out);
        }
        // What the free places wait for until the next event.
        let free = batch.saturating_sub(working.len()) as f64;
        let waiting_for = if !first_batch {
            &mut out.idle.start
        } else if !queue.is_empty() {
            &mut out.idle.queued
        } else if claiming.is_some() {
            &mut out.idle.claim
        } else {
            &mut out.idle.poll
        };
        let waited = Instant::now();
        let event = tokio::select! {
            Some(w) = working.join_next(), if !working.is_empty() => Event::Worked(w?),
            Some(r) = reporting.join_next(), if !reporting.is_empty() => Event::Reported(r??),
            c = claimed(&mut claiming), if claiming.is_some() => Event::Claimed(c??),
            () = tokio::time::sleep_until(next_claim), if claiming.is_none() && !finished && queue.len() < batch => Event::Tick,
            () = tokio::time::sleep(REPORT_AFTER), if oldest.is_some() => Event::Tick,
        };
        *waiting_for += free * waited.elapsed().as_secs_f64();
        match event {
            Event::Worked((lease, id, sub, late)) => {
                out.late += late;
                unreported.entry(lease).or_default().push((id, sub));
                oldest.get_or_insert_with(Instant::now);
            }
            Event::Reported((status, subs, took)) => {
                out.report_time += took;
                match status {
                    200 => {
                        done.fetch_add(subs.len() as u64, Ordering::Relaxed);
                        *last_done.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                        out.completed.extend(subs);
                    }
                    409 => out.lost += subs.len() as u64,
                    other => anyhow::bail!("a report was answered {other}"),
                }
            }
            Event::Claimed(((status, claim), took)) => {
                claiming = None;
                first_batch = true;
                out.claim_time += took;
                anyhow::ensure!(status == 200, "a claim was answered {status}: {claim}");
                let lease = claim["lease"].as_str().unwrap_or_default().to_owned();
                let items = claim["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    out.empty_claims += 1;
                    if claim["job"]["state"] != "running" {
                        finished = true;
                    } else {
                        empty_in_a_row += 1;
                        let hint = Duration::from_secs_f64(
                            claim["retry_after"].as_f64().unwrap_or(1.0).clamp(0.0, 1.0),
                        );
                        let backoff = FIRST_POLL.saturating_mul(1 << (empty_in_a_row - 1).min(16));
                        next_claim = tokio::time::Instant::now()
                            + hint.min(backoff).min(POLL_MAX).max(FIRST_POLL);
                    }
                } else {
                    empty_in_a_row = 0;
                }
                for item in items {
                    queue.push_back((
                        lease.clone(),
                        item["id"].as_i64().unwrap_or_default(),
                        item["sub"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            Event::Tick => {}
        }
    }
}

/// What woke a worker of the bench.
enum Event {
    Worked((String, i64, String, Duration)),
    Reported((u16, Vec<String>, Duration)),
    Claimed(Answered),
    Tick,
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
