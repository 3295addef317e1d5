//! grantkeeper's benchmarks. Each scenario prints its figure as a ratio to a floor measured in
//! the same run on the same machine, with the absolute numbers beside it; `all` runs every
//! scenario and prints the table that BENCHMARKS.md shows.
//!
//!     bench/run.sh                     # release build, wrk if missing, then `all`
//!     cargo run --release -p grantkeeper-bench -- all [options]
//!     cargo run --release -p grantkeeper-bench -- verify|handout|signin|stampede|sweep|jobs|memory|growth
//!
//! HTTP scenarios run `grantkeeper serve` (the release binary next to this one, or
//! `--grantkeeper PATH`) as a separate process on 127.0.0.1 and load it with wrk; the Google
//! emulator runs inside this process. `GRANTKEEPER_BENCH_SERVE_WRAPPER` puts a command before
//! each `serve` process (e.g. `valgrind --tool=massif`), for profiling.
// Benchmarks measure real time: the clock ban (clippy.toml) is for the code under test.
#![allow(clippy::disallowed_methods)]

mod google;
mod growth;
mod handout;
mod jobs;
mod load;
mod population;
mod report;
mod server;
mod signin;
mod stampede;
mod sweep;
mod verify;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use report::{Row, Table, Verdict};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "grantkeeper benchmarks: every figure against a floor measured in the same run")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Every scenario below, then the table
    All,
    /// ID-token verification (in-process) against a bare RS256 signature check
    Verify,
    /// Cached token hand-outs over HTTP against the same server's /healthz
    Handout,
    /// /authcode sign-ins (SQLite, PostgreSQL) against the emulator's /token alone
    Signin,
    /// Many concurrent demands on one expired grant: upstream refreshes (one and two instances)
    Stampede,
    /// `sweep --job refresh` over N users with injected upstream latency, against the ideal
    /// N x latency / concurrency
    Sweep,
    /// Users worked on by several workers over /v1/jobs with a latency per user, against the
    /// ideal N x latency / (workers x batch); then one worker killed halfway
    Jobs,
    /// Peak RSS of a serve process with many stored users and cached tokens
    Memory,
    /// Sign-in and hand-out figures as the store grows
    Growth,
}

/// Sizes and durations; the defaults are the published run's, smaller ones suit development.
#[derive(Args, Clone, Debug)]
pub struct Opts {
    /// The grantkeeper binary (default: `grantkeeper` next to this binary)
    #[arg(long, global = true, value_name = "PATH")]
    grantkeeper: Option<PathBuf>,
    /// PostgreSQL admin URL; scratch databases are made and dropped there
    #[arg(
        long,
        global = true,
        env = "GRANTKEEPER_TEST_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Skip the PostgreSQL cases
    #[arg(long, global = true)]
    pub no_postgres: bool,
    /// Seconds of each wrk run of `handout` and `signin`
    #[arg(long, global = true, default_value_t = 10)]
    pub duration: u64,
    /// Connections of the `handout` runs
    #[arg(long, global = true, value_delimiter = ',', default_values_t = [64, 1024])]
    pub connections: Vec<u32>,
    /// Connections of the sign-in runs (`signin`, `growth`)
    #[arg(long, global = true, default_value_t = 64)]
    pub signin_connections: u32,
    /// Verifications timed on each side of `verify`
    #[arg(long, global = true, default_value_t = 200_000)]
    pub verify_iterations: u32,
    /// Concurrent demands of `stampede`
    #[arg(long, global = true, default_value_t = 1000)]
    pub demands: usize,
    /// Upstream latency injected on refreshes during `stampede`, in ms
    #[arg(long, global = true, default_value_t = 200)]
    pub stampede_latency_ms: u64,
    /// Users of `sweep`
    #[arg(
        long = "sweep-users",
        alias = "users",
        global = true,
        default_value_t = 10_000
    )]
    pub sweep_users: usize,
    /// Upstream latency injected during `sweep`, in ms
    #[arg(
        long = "sweep-latency-ms",
        alias = "latency-ms",
        global = true,
        default_value_t = 50
    )]
    pub sweep_latency_ms: u64,
    /// Concurrencies of `sweep`, each a run over the same users
    #[arg(
        long = "sweep-concurrency",
        alias = "concurrency",
        global = true,
        value_delimiter = ',',
        default_values_t = [32, 100]
    )]
    pub sweep_concurrency: Vec<usize>,
    /// Users of `jobs`
    #[arg(long, global = true, default_value_t = 10_000)]
    pub jobs_users: usize,
    /// Each user's work in `jobs` (an upstream call), in ms
    #[arg(long, global = true, default_value_t = 50)]
    pub jobs_latency_ms: u64,
    /// Workers of `jobs`
    #[arg(long, global = true, default_value_t = 4)]
    pub jobs_workers: usize,
    /// Users per claim, and users in work at once, of each worker of `jobs`
    #[arg(long, global = true, default_value_t = 50)]
    pub jobs_batch: usize,
    /// The item lease of `jobs`, in seconds: how soon a killed worker's users are offered again
    #[arg(long, global = true, default_value_t = 5)]
    pub jobs_lease_secs: u64,
    /// Stored users at which `growth` measures
    #[arg(long, global = true, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    pub sizes: Vec<u64>,
    /// Seconds of each wrk run of `growth`
    #[arg(long, global = true, default_value_t = 5)]
    pub growth_duration: u64,
    /// Stored users of `memory`
    #[arg(long, global = true, default_value_t = 1_000_000)]
    pub memory_users: u64,
    /// Cached tokens of `memory` (distinct users handed a token)
    #[arg(long, global = true, default_value_t = 100_000)]
    pub cached: u64,
    /// Peak RSS goal of `memory`, in MB
    #[arg(long, global = true, default_value_t = 150)]
    pub memory_goal_mb: u64,
}

/// What every scenario shares: options, the grantkeeper binary, a work dir, the wrk script
/// and the table.
pub struct Ctx {
    pub opts: Opts,
    pub bin: PathBuf,
    pub work: tempfile::TempDir,
    pub script: PathBuf,
    pub table: Table,
    pub http: reqwest::Client,
}

impl Ctx {
    fn new(opts: Opts) -> anyhow::Result<Ctx> {
        let bin = match &opts.grantkeeper {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory holds this binary")?
                .join("grantkeeper"),
        };
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: `cargo build --release -p grantkeeper` (or --grantkeeper PATH)",
            bin.display()
        );
        let work = tempfile::Builder::new()
            .prefix("grantkeeper-bench-")
            .tempdir()?;
        let script = work.path().join("gk.lua");
        std::fs::write(&script, load::SCRIPT)?;
        Ok(Ctx {
            opts,
            bin,
            work,
            script,
            table: Table::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// A fresh directory under the run's work dir.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.opts.duration)
    }
}

/// Whether wrk can run, and how many files a process may open (1,024 connections need more
/// than the usual soft limit of 1,024 on both ends).
fn preflight(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<()> {
    let http = !matches!(
        scenario,
        Scenario::Verify | Scenario::Sweep | Scenario::Jobs
    );
    if http {
        let wrk = std::process::Command::new("wrk").arg("--version").output();
        anyhow::ensure!(
            wrk.is_ok(),
            "wrk is not installed: apt-get install -y wrk (bench/run.sh does it)"
        );
    }
    let most = ctx.opts.connections.iter().copied().max().unwrap_or(0) as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft
        && http
        && soft < most * 2 + 256
    {
        anyhow::bail!(
            "the open-file limit is {soft}: {most} connections need more (`ulimit -n 65536`; \
             bench/run.sh raises it)"
        );
    }
    Ok(())
}

async fn run(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::All => anyhow::bail!("`all` is not a single scenario"),
        Scenario::Verify => verify::run(ctx).await,
        Scenario::Handout => handout::run(ctx).await,
        Scenario::Signin => signin::run(ctx).await,
        Scenario::Stampede => stampede::run(ctx).await,
        Scenario::Sweep => sweep::run(ctx).await,
        Scenario::Jobs => jobs::run(ctx).await,
        Scenario::Memory => growth::run(ctx, false, true).await,
        Scenario::Growth => growth::run(ctx, true, false).await,
    }
}

fn name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::All => "all",
        Scenario::Verify => "verify",
        Scenario::Handout => "handout",
        Scenario::Signin => "signin",
        Scenario::Stampede => "stampede",
        Scenario::Sweep => "sweep",
        Scenario::Jobs => "jobs",
        Scenario::Memory => "memory",
        Scenario::Growth => "growth",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ctx = Ctx::new(cli.opts)?;
    preflight(&ctx, cli.scenario)?;
    let load_before = load_average();
    let started = Instant::now();
    if cli.scenario == Scenario::All {
        for scenario in [
            Scenario::Verify,
            Scenario::Handout,
            Scenario::Signin,
            Scenario::Stampede,
            Scenario::Sweep,
            Scenario::Jobs,
        ] {
            run_reported(&ctx, scenario, run(&ctx, scenario)).await;
        }
        // One population serves both: growth measures at each size, memory at the largest.
        run_reported(&ctx, Scenario::Growth, growth::run(&ctx, true, true)).await;
    } else {
        run_reported(&ctx, cli.scenario, run(&ctx, cli.scenario)).await;
    }
    println!("{}", machine());
    println!(
        "load average before: {load_before}; after: {}",
        load_average()
    );
    println!();
    println!("{}", ctx.table.render());
    println!(
        "run time: {:.0} s ({} scenario{})",
        started.elapsed().as_secs_f64(),
        name(cli.scenario),
        if cli.scenario == Scenario::All {
            "s"
        } else {
            ""
        }
    );
    Ok(())
}

/// `2 x Intel(R) Xeon(R) Processor, 23.5 GiB`: what the figures were measured on.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    format!("machine: {cpus} x {model}, {:.1} GiB", kb / 1024.0 / 1024.0)
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews every figure).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a scenario; a failure becomes a row of the table, and the next scenario still runs.
async fn run_reported(
    ctx: &Ctx,
    scenario: Scenario,
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    let started = Instant::now();
    eprintln!("== {}", name(scenario));
    if let Err(e) = future.await {
        eprintln!("{} failed: {e:#}", name(scenario));
        ctx.table.add(Row {
            scenario: name(scenario),
            case: "failed".to_owned(),
            floor: "-".to_owned(),
            ours: format!("error: {e:#}"),
            ratio: None,
            goal: "-".to_owned(),
            verdict: Verdict::Missed,
        });
    }
    eprintln!(
        "== {} took {:.0} s",
        name(scenario),
        started.elapsed().as_secs_f64()
    );
}
