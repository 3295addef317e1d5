//! `jobs run|list|show|cancel`: the job engine from the command line. `jobs run` is a worker of
//! the engine inside this process whose work for a user is an operator's shell command, handed
//! the user's sub and a fresh access token in its environment.

use crate::Target;
use crate::admin::{open_app, parse_rate};
use crate::output::{listing, table, when};
use anyhow::{anyhow, bail};
use grantkeeper_broker::jobs::worker::{
    self, ItemEvent, WorkOutcome, WorkerOptions, WorkerSummary,
};
use grantkeeper_broker::jobs::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MIN_TTL, DEFAULT_RETRY, HandedOut, JobDetail, JobError, JobSpec,
    JobView, Kind, MAX_NAME,
};
use grantkeeper_core::{ExposeSecret, Scopes};
use grantkeeper_server::App;
use grantkeeper_server::http::jobs::{detail_answer, job_answer};
use grantkeeper_store::{ItemState, JobState, Selection};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;

/// The exit status with which a command asks to be run again later (sysexits' EX_TEMPFAIL).
const EX_TEMPFAIL: i32 = 75;

/// What `jobs run` was asked.
#[derive(Clone, Debug)]
pub struct RunArgs {
    pub scopes: Vec<String>,
    pub exec: String,
    pub name: Option<String>,
    pub concurrency: usize,
    pub rate: Option<String>,
    pub lease: Duration,
}

/// What became of one user, as the JSON lines and the summary name it.
fn outcome(state: ItemState) -> &'static str {
    match state {
        ItemState::Done => "done",
        ItemState::Pending | ItemState::Leased => "retry",
        ItemState::Failed => "failed",
        ItemState::Skipped => "skipped",
    }
}

const OUTCOMES: [&str; 4] = ["done", "retry", "failed", "skipped"];

fn unknown_job(e: JobError, id: i64) -> anyhow::Error {
    match e {
        JobError::NotFound => anyhow!("no job has the id {id}"),
        other => anyhow!("{other}"),
    }
}

pub async fn run(target: &Target, args: RunArgs) -> anyhow::Result<()> {
    if args.exec.trim().is_empty() {
        bail!("--exec takes a shell command");
    }
    let rate = args.rate.as_deref().map(parse_rate).transpose()?;
    let app = open_app(target).await?;
    let (view, made) = make_or_resume(&app, run_spec(&args, rate)).await?;
    let id = view.job.id;
    let stop = crate::stop_on_ctrl_c(
        "stopping: waiting for the commands running (Ctrl-C again to quit at once)",
    )?;
    let progress = Progress::new(view.job.total, view.counts.settled());
    let on_event = |e: &ItemEvent| progress.settled(e);
    let work = command_work(&app, id, &args.exec);
    let summary = worker::run(
        app.jobs(),
        id,
        worker_options(&args, rate),
        stop,
        work,
        &on_event,
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    progress.finish();
    app.audit().flush().await;
    let view = app.jobs().progress(id).await.map_err(|e| anyhow!("{e}"))?;
    let counts = progress.counts();
    if progress.lines {
        println!("{}", summary_line(&view, made, &summary, &counts));
    }
    eprint!("{}", summary_text(&view, &summary, &counts));
    if view.job.state == JobState::Cancelled && !summary.interrupted {
        bail!(
            "job {id} ({}) was cancelled (jobs cancel): its users not settled yet stay so; the same command makes a new job",
            view.job.name
        );
    }
    Ok(())
}

/// The job `jobs run` makes: of kind `run`, keyed by its name (CMD unless `--name`), so that
/// the same command again resumes it.
fn run_spec(args: &RunArgs, rate: Option<f64>) -> JobSpec {
    let name = args.name.clone().unwrap_or_else(|| args.exec.clone());
    JobSpec {
        // A long command names its job by its start; the key keeps all of it.
        name: name.trim().chars().take(MAX_NAME).collect(),
        kind: Kind::Run,
        key: Some(format!("run:{name}")),
        scopes: Scopes::from_iter(&args.scopes),
        selection: Selection::Holding,
        rate,
        lease: args.lease,
        min_ttl: DEFAULT_MIN_TTL,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        spread: Duration::ZERO,
    }
}

/// Makes the job, or joins the running one of the same key, and says which on stderr; true
/// when made.
async fn make_or_resume(app: &App, spec: JobSpec) -> anyhow::Result<(JobView, bool)> {
    let scopes = spec.scopes.clone();
    let (view, made) = app
        .jobs()
        .create_or_join(spec, "cli")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let id = view.job.id;
    if made {
        eprintln!("job {id} ({}): {} users", view.job.name, view.job.total);
    } else {
        eprintln!(
            "resuming job {id} ({}): {} of {} users settled before",
            view.job.name,
            view.counts.settled(),
            view.job.total
        );
        if view.job.scopes != scopes {
            eprintln!(
                "note: the job keeps the scopes it was made with ({}); cancel it to start over with others",
                view.job.scopes
            );
        }
    }
    Ok((view, made))
}

/// What a person, or a script, sees of the users settled: a progress bar on a terminal
/// (stderr); stdout, when it is not a terminal, carries JSON lines and nothing else: one per
/// user, then one summary.
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: u64,
    /// The job's users settled, earlier runs' included.
    done: AtomicU64,
    /// This invocation's users by outcome.
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Progress {
    fn new(total: u64, settled_before: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} users  {per_sec}  eta {eta}  {msg}",
            ) {
                bar.set_style(style);
            }
            bar.set_position(settled_before);
            bar
        });
        Progress {
            bar,
            lines: !std::io::stdout().is_terminal(),
            total,
            done: AtomicU64::new(settled_before),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// One user settled by this invocation.
    fn settled(&self, e: &ItemEvent) {
        let outcome = outcome(e.state);
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(outcome).or_default() += 1;
        }
        let done = if e.state == ItemState::Pending {
            self.done.load(Ordering::Relaxed)
        } else {
            self.done.fetch_add(1, Ordering::Relaxed) + 1
        };
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
        if self.lines {
            let detail = if e.detail.is_empty() {
                Value::Null
            } else {
                Value::String(e.detail.clone())
            };
            println!(
                "{}",
                json!({"sub": e.sub, "outcome": outcome, "detail": detail, "done": done, "total": self.total})
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// A user's work: the hand-out audited, then the operator's command run for them.
fn command_work(
    app: &App,
    id: i64,
    exec: &str,
) -> impl Fn(HandedOut) -> std::pin::Pin<Box<dyn Future<Output = WorkOutcome> + Send>> + use<> {
    let exec: Arc<str> = Arc::from(exec);
    let audit = app.audit().clone();
    move |item: HandedOut| {
        let (exec, audit) = (exec.clone(), audit.clone());
        Box::pin(async move {
            audit
                .record(
                    "cli",
                    Some(item.sub.as_str()),
                    "token",
                    format!("job {id}"),
                    "ok",
                )
                .await;
            // The command runs on a blocking thread: std's process API needs no further
            // feature of tokio (whose `process` feature would rebuild every crate on it).
            tokio::task::spawn_blocking(move || run_command(&exec, &item))
                .await
                .unwrap_or_else(|e| {
                    WorkOutcome::Retry(DEFAULT_RETRY, format!("the command's thread ended: {e}"))
                })
        })
    }
}

fn worker_options(args: &RunArgs, rate: Option<f64>) -> WorkerOptions {
    let concurrency = args.concurrency.max(1);
    WorkerOptions {
        concurrency,
        // A batch is what the window works on next: tokens handed out are used soon.
        batch: u32::try_from(concurrency.clamp(1, 500)).unwrap_or(1),
        lease: Some(args.lease),
        start_rate: rate,
        name: "jobs run".to_owned(),
        linger: true,
        max_wait: Duration::from_secs(2),
        work_in_claim: false,
        refresh_in_worker: false,
    }
}

/// The last JSON line: this invocation's counts, and the job as `GET /v1/jobs/{id}` gives it.
fn summary_line(
    view: &JobView,
    made: bool,
    summary: &WorkerSummary,
    counts: &BTreeMap<&'static str, u64>,
) -> Value {
    let counts_json: serde_json::Map<String, Value> = OUTCOMES
        .iter()
        .map(|o| ((*o).to_owned(), counts.get(o).copied().unwrap_or(0).into()))
        .collect();
    json!({"summary": {
        "job": view.job.id,
        "name": view.job.name,
        "resumed": !made,
        "interrupted": summary.interrupted,
        "seconds": (summary.elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "counts": counts_json,
        "run": job_answer(view),
    }})
}

/// What a person reads at the end (on stderr): this invocation's and the whole job's counts.
fn summary_text(
    view: &JobView,
    summary: &WorkerSummary,
    counts: &BTreeMap<&'static str, u64>,
) -> String {
    let mut row = vec!["this run".to_owned()];
    row.extend(
        OUTCOMES
            .iter()
            .map(|o| counts.get(o).copied().unwrap_or(0).to_string()),
    );
    let c = &view.counts;
    let whole = vec![
        "whole job".to_owned(),
        c.done.to_string(),
        "-".to_owned(),
        c.failed.to_string(),
        c.skipped_total().to_string(),
    ];
    let mut text = table(&["", "DONE", "RETRY", "FAILED", "SKIPPED"], &[row, whole]);
    text.push_str(&format!(
        "job {} is {} ({} of {} users settled); took {:.1} s\n",
        view.job.id,
        view.job.state.as_str(),
        c.settled(),
        view.job.total,
        summary.elapsed.as_secs_f64()
    ));
    if summary.interrupted {
        text.push_str("interrupted: run the same command again to resume\n");
    }
    text
}

/// Runs `sh -c exec` for one user: the token in its environment, never on its command line.
/// Its stdout goes to this process's stderr (stdout carries the JSON lines alone); the last
/// line of its stderr, the token masked, is the detail of a failure.
fn run_command(exec: &str, item: &HandedOut) -> WorkOutcome {
    let token = item.token.token.expose_secret();
    let expires_at = item.token.expires_at.format(&Rfc3339).unwrap_or_default();
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("GRANTKEEPER_SUB", &item.sub)
        .env("GRANTKEEPER_ACCESS_TOKEN", token)
        .env("GRANTKEEPER_TOKEN_EXPIRES_AT", expires_at)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return WorkOutcome::Failed(format!("could not start sh: {e}")),
    };
    let mut errors = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_end(&mut errors);
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(e) => return WorkOutcome::Failed(format!("could not wait for the command: {e}")),
    };
    let errors = String::from_utf8_lossy(&errors);
    let last = errors
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let last = if token.is_empty() {
        last.to_owned()
    } else {
        last.replace(token, "[token]")
    };
    match status.code() {
        Some(0) => WorkOutcome::Done(String::new()),
        Some(EX_TEMPFAIL) => WorkOutcome::Retry(
            DEFAULT_RETRY,
            if last.is_empty() {
                "the command asked to be run again later (exit status 75)".to_owned()
            } else {
                last
            },
        ),
        Some(code) if last.is_empty() => WorkOutcome::Failed(format!("exit status {code}")),
        Some(_) => WorkOutcome::Failed(last),
        None => WorkOutcome::Failed(format!("ended by a signal ({status})")),
    }
}

/// Writes `text` to stdout as it is.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn progress_cells(view: &JobView) -> [String; 4] {
    let c = &view.counts;
    [
        c.done.to_string(),
        c.failed.to_string(),
        c.skipped_total().to_string(),
        view.job.total.to_string(),
    ]
}

pub async fn list(
    target: &Target,
    state: Option<String>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let state = state
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|_| anyhow!("--state takes running, finished or cancelled, not {s:?}"))
        })
        .transpose()?;
    let app = open_app(target).await?;
    let views = app
        .jobs()
        .list(state, limit)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let mut row = vec![
                v.job.id.to_string(),
                v.job.name.clone(),
                v.job.kind.clone(),
                v.job.state.as_str().to_owned(),
            ];
            row.extend(progress_cells(v));
            row.push(when(v.job.created_at));
            row
        })
        .collect();
    let objects: Vec<Value> = views.iter().map(job_answer).collect();
    print(&listing(
        json,
        &[
            "ID", "NAME", "KIND", "STATE", "DONE", "FAILED", "SKIPPED", "TOTAL", "CREATED",
        ],
        &rows,
        &objects,
    ))
}

pub async fn show(target: &Target, id: i64, json: bool) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let detail = app
        .jobs()
        .detail(id)
        .await
        .map_err(|e| unknown_job(e, id))?;
    if json {
        return print(&format!("{}\n", detail_answer(&detail)));
    }
    print(&show_text(&detail))
}

fn show_text(detail: &JobDetail) -> String {
    let v = &detail.view;
    let j = &v.job;
    let c = &v.counts;
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<10} {value}\n"));
    line("id:", j.id.to_string());
    line("name:", j.name.clone());
    line("kind:", j.kind.clone());
    line("state:", j.state.as_str().to_owned());
    line(
        "scopes:",
        if j.scopes.is_empty() {
            "- (every user)".to_owned()
        } else {
            j.scopes.to_string()
        },
    );
    line(
        "rate:",
        j.rate
            .map(|r| format!("{r} refreshes/s"))
            .unwrap_or_else(|| "no limit".to_owned()),
    );
    line("lease:", format!("{} s", j.lease_secs));
    line(
        "created:",
        format!("{} by {}", when(j.created_at), j.created_by),
    );
    line(
        "finished:",
        j.finished_at.map(when).unwrap_or_else(|| "-".to_owned()),
    );
    let skipped_by = c
        .skipped
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(why, n)| format!("{why} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    line(
        "progress:",
        format!(
            "{} of {} settled: done {}, failed {}, skipped {}{}; in flight {}, pending {}",
            c.settled(),
            j.total,
            c.done,
            c.failed,
            c.skipped_total(),
            if skipped_by.is_empty() {
                String::new()
            } else {
                format!(" ({skipped_by})")
            },
            c.in_flight,
            c.pending
        ),
    );
    line(
        "speed:",
        format!(
            "{:.2} users/s, done by {}",
            v.rate,
            v.eta.map(when).unwrap_or_else(|| "-".to_owned())
        ),
    );
    out.push_str("failures:\n");
    let rows: Vec<Vec<String>> = detail
        .failures
        .iter()
        .map(|f| {
            vec![
                f.sub.clone(),
                f.state.as_str().to_owned(),
                f.reason.clone().unwrap_or_else(|| "-".to_owned()),
                f.at.map(when).unwrap_or_else(|| "-".to_owned()),
                f.detail.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    out.push_str(&table(&["SUB", "STATE", "REASON", "AT", "DETAIL"], &rows));
    out
}

pub async fn cancel(target: &Target, id: i64) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let before = app
        .jobs()
        .progress(id)
        .await
        .map_err(|e| unknown_job(e, id))?;
    if before.job.state != JobState::Running {
        bail!(
            "job {id} is {} already: nothing to cancel",
            before.job.state.as_str()
        );
    }
    let view = app
        .jobs()
        .cancel(id)
        .await
        .map_err(|e| unknown_job(e, id))?;
    match view.job.state {
        JobState::Cancelled => println!(
            "cancelled job {id} ({}): {} of {} users settled; nothing more is handed out",
            view.job.name,
            view.counts.settled(),
            view.job.total
        ),
        // It finished between the two reads.
        other => bail!("job {id} is {} already: nothing to cancel", other.as_str()),
    }
    Ok(())
}
