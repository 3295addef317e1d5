//! The `grantkeeper` command: runs the server (`serve`, `dev`), the Google emulator alone
//! (`emulator`), and the operator's commands on a store (`migrate`, `check`).
//!
//! It only wires parts together; every rule lives in the library crates.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod admin;
mod dev;
mod jobs;
mod keys;
mod ops;
mod output;
mod transfer;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "grantkeeper",
    version,
    about = "Offline access to Google APIs for users who signed in with Google"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a store-acting command finds its configuration.
#[derive(clap::Args, Clone, Debug)]
#[group(required = false, multiple = false)]
pub struct Target {
    /// grantkeeper.toml of a deployment
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// the data dir of `grantkeeper dev`
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Server and Google emulator on one port, with a sign-in page; data under --data-dir
    Dev {
        /// A loopback address unless --expose-emulator-control is given
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        #[arg(long, default_value = ".grantkeeper")]
        data_dir: PathBuf,
        /// Keep the master key in the emulated Cloud KMS instead of master.key
        #[arg(long)]
        kms: bool,
        /// Allow a non-loopback --addr: whoever reaches it can drive the emulator's control
        /// API, which hands out client secrets and issued tokens, mints codes and revokes users
        #[arg(long)]
        expose_emulator_control: bool,
    },
    /// The server against the configured provider (Google by default)
    Serve {
        #[arg(long, value_name = "FILE", default_value = "grantkeeper.toml")]
        config: PathBuf,
    },
    /// The Google emulator alone
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        /// Keeps the emulator's state and writes client_secret.json here (in memory without it)
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Applies pending database migrations
    Migrate {
        #[command(flatten)]
        target: Target,
    },
    /// Checks configuration, database, master key and provider, and says how to fix what fails
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// API keys of the app's services
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// The vault's data keys: rotate them or move them to another master key while servers
    /// run, list them
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users and their grants
    #[command(subcommand)]
    Users(UsersCommand),
    /// Bulk work over every user: run a command once per user with a fresh token, list,
    /// show and cancel jobs
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The audit log: token hand-outs, proxied calls, deletions
    Audit {
        /// Only this user's rows
        #[arg(long, value_name = "SUB")]
        user: Option<String>,
        /// Only rows since an RFC 3339 time or a duration ago (24h, 7d)
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Writes every user, grant, event, API key, audit row, wrapped data key, queued
    /// revocation, sign-in block, security event id and activity minute as JSON lines (sealed
    /// values stay sealed; sessions, refresh leases and sweep progress stay behind)
    Export {
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Reads an export into this deployment's store; rows already present are left alone, so
    /// running it again changes nothing. The deployment must use the exporter's master key.
    Import {
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Runs a job for every grant: `refresh` checks and warms each grant; `drive-appdata` lists
    /// each user's Drive app folder. Ctrl-C stops cleanly; running it again resumes.
    Sweep {
        #[arg(long, value_parser = ["refresh", "drive-appdata"])]
        job: String,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Upstream calls started per second at most, e.g. 50/s
        #[arg(long)]
        rate: Option<String>,
        /// When a sweep process dies, another continues its batch this long after its last
        /// save (several sweeps may run at once on one database)
        #[arg(long, default_value = "30s", value_parser = parse_lease)]
        batch_lease: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_lease(text: &str) -> Result<std::time::Duration, String> {
    grantkeeper_server::config::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration like 30s or 2m"))
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Creates a key and prints it once, alone on the last line
    Create {
        #[arg(long)]
        name: String,
        /// token, proxy, users:read, users:write, jobs (repeatable; default: token proxy
        /// users:read)
        #[arg(long = "scope", value_parser = ["token", "proxy", "users:read", "users:write", "jobs"])]
        scopes: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Lists every key (never the secrets)
    List {
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revokes a key by its id
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Makes a new data key the active one and re-seals every sealed value under it, then
    /// retires the old keys; running servers pick the new key up without a restart. Ctrl-C
    /// stops after the batch under way; running it again resumes.
    Rotate {
        /// Values re-sealed per store transaction (1 to 1000)
        #[arg(long, default_value_t = grantkeeper_server::vault::rotation::DEFAULT_BATCH_SIZE,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch_size: u32,
        /// How long the new key must have been active before old keys are retired: at least
        /// twice vault.reload_interval, by when every running server reads the keys again
        /// [default: twice vault.reload_interval, 60s unless configured]
        #[arg(long, value_parser = parse_grace)]
        grace: Option<std::time::Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// Wraps every data key with another master key (Cloud KMS, an HSM, a key file) while
    /// servers run; sealed values are not touched. Ctrl-C stops after the key under way;
    /// running it again resumes.
    Rewrap {
        /// The new master key: kms:projects/P/locations/L/keyRings/R/cryptoKeys/K, a
        /// pkcs11: URI (RFC 7512), or file:PATH
        #[arg(long, value_name = "SOURCE")]
        to: String,
        /// Cloud KMS's endpoint (the emulator's base URL in development)
        #[arg(long, value_name = "URL")]
        kms_endpoint: Option<String>,
        /// A service account key file (else Application Default Credentials)
        #[arg(long, value_name = "FILE")]
        kms_credentials_file: Option<std::path::PathBuf>,
        /// The HSM's PKCS#11 library
        #[arg(long, value_name = "PATH")]
        pkcs11_module: Option<std::path::PathBuf>,
        /// A file holding the token's user PIN
        #[arg(long, value_name = "FILE")]
        pkcs11_pin_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// One line per data key: id, created, active, retired, how many values it seals, and
    /// which master key wraps it
    List {
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    grantkeeper_server::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 60s, 2m or 0s"))
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Runs `sh -c CMD` once per user whose grant holds every --scope, with GRANTKEEPER_SUB,
    /// GRANTKEEPER_ACCESS_TOKEN and GRANTKEEPER_TOKEN_EXPIRES_AT in its environment. Exit
    /// status 0: done; 75: run again later; else failed. Ctrl-C stops after the commands
    /// running; running it again (same --name) resumes.
    Run {
        /// A scope every user's grant must hold (repeatable)
        #[arg(long = "scope", value_name = "S", required = true)]
        scopes: Vec<String>,
        /// The shell command run for each user
        #[arg(long, value_name = "CMD")]
        exec: String,
        /// The job's name, which a rerun resumes [default: CMD]
        #[arg(long)]
        name: Option<String>,
        /// Commands running at once
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=500))]
        concurrency: u32,
        /// Commands started per second at most, e.g. 5/s (also the job's refreshes a second)
        #[arg(long)]
        rate: Option<String>,
        /// How long a user is held before another run may take it, should this one die
        #[arg(long, default_value = "5m", value_parser = parse_lease)]
        lease: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Jobs newest first, with their progress
    List {
        #[arg(long, value_parser = ["running", "finished", "cancelled"])]
        state: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// One JSON object per line (the jobs of GET /v1/jobs) instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// One job, its progress and its last failures
    Show {
        id: i64,
        /// One JSON object (as GET /v1/jobs/{id} answers) instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Cancels a running job: nothing more is handed out
    Cancel {
        id: i64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Users with their grant's state, in sub order, a page at a time
    List {
        /// Only users whose email contains this text (or whose sub starts with it)
        #[arg(long, value_name = "TEXT")]
        email: Option<String>,
        /// Only grants in this state
        #[arg(long, value_parser = ["active", "failing", "needs_consent", "revoked"])]
        state: Option<String>,
        /// Users at most; when more follow, stderr names the cursor to go on from
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Go on after an earlier listing (its `next_cursor`, as GET /v1/users gives too)
        #[arg(long)]
        cursor: Option<String>,
        /// One JSON object per line (the fields of GET /v1/users/{sub}) instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// One user, their grant and its history
    Show {
        sub: String,
        /// One JSON object (the fields of GET /v1/users/{sub}, and the history) instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revokes the user's grant at Google and marks it revoked (the user stays)
    Revoke {
        sub: String,
        #[command(flatten)]
        target: Target,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: not in log files and collectors, and not paid
    // for in every request's span.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs one command; the groups of subcommands have a function each.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev {
            addr,
            data_dir,
            kms,
            expose_emulator_control,
        } => dev::run(addr, data_dir, kms, expose_emulator_control).await,
        Command::Serve { config } => ops::serve(config).await,
        Command::Emulator { addr, data_dir } => dev::emulator(addr, data_dir).await,
        Command::Migrate { target } => ops::migrate(target).await,
        Command::Check { target } => ops::check(target).await,
        Command::ApiKeys(command) => run_api_keys(command).await,
        Command::Keys(command) => run_keys(command).await,
        Command::Users(command) => run_users(command).await,
        Command::Jobs(command) => run_jobs(command).await,
        Command::Audit {
            user,
            since,
            limit,
            json,
            target,
        } => admin::audit(&target, user, since, limit, json).await,
        Command::Export { output, target } => transfer::export(&target, output).await,
        Command::Import { input, target } => transfer::import(&target, input).await,
        Command::Sweep {
            job,
            concurrency,
            rate,
            batch_lease,
            target,
        } => admin::sweep(&target, &job, concurrency, rate, batch_lease).await,
    }
}

/// `grantkeeper api-keys ...`.
async fn run_api_keys(command: ApiKeysCommand) -> anyhow::Result<()> {
    match command {
        ApiKeysCommand::Create {
            name,
            scopes,
            target,
        } => admin::api_keys_create(&target, &name, &scopes).await,
        ApiKeysCommand::List { json, target } => admin::api_keys_list(&target, json).await,
        ApiKeysCommand::Revoke { id, target } => admin::api_keys_revoke(&target, &id).await,
    }
}

/// `grantkeeper keys ...`.
async fn run_keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate {
            batch_size,
            grace,
            target,
        } => keys::rotate(&target, batch_size, grace).await,
        KeysCommand::List { json, target } => keys::list(&target, json).await,
        KeysCommand::Rewrap {
            to,
            kms_endpoint,
            kms_credentials_file,
            pkcs11_module,
            pkcs11_pin_file,
            target,
        } => {
            let options = grantkeeper_server::master_key::SpecOptions {
                kms_endpoint,
                kms_credentials_file,
                pkcs11_module,
                pkcs11_pin_file,
            };
            keys::rewrap(&target, &to, &options).await
        }
    }
}

/// `grantkeeper users ...`.
async fn run_users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::List {
            email,
            state,
            limit,
            cursor,
            json,
            target,
        } => {
            let filter = admin::UserFilter {
                email,
                state,
                limit,
                cursor,
            };
            admin::users_list(&target, &filter, json).await
        }
        UsersCommand::Show { sub, json, target } => admin::users_show(&target, &sub, json).await,
        UsersCommand::Revoke { sub, target } => admin::users_revoke(&target, &sub).await,
    }
}

/// `grantkeeper jobs ...`.
async fn run_jobs(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Run {
            scopes,
            exec,
            name,
            concurrency,
            rate,
            lease,
            target,
        } => {
            let args = jobs::RunArgs {
                scopes,
                exec,
                name,
                concurrency: concurrency as usize,
                rate,
                lease,
            };
            jobs::run(&target, args).await
        }
        JobsCommand::List {
            state,
            limit,
            json,
            target,
        } => jobs::list(&target, state, limit, json).await,
        JobsCommand::Show { id, json, target } => jobs::show(&target, id, json).await,
        JobsCommand::Cancel { id, target } => jobs::cancel(&target, id).await,
    }
}

/// Serves `router` on `listener` until Ctrl-C or SIGTERM.
pub async fn serve_until_signal(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> anyhow::Result<()> {
    // The peer address feeds the per-IP sign-in limit.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Turns true at the first Ctrl-C, after printing `stopping` to stderr; a second Ctrl-C quits at
/// once (status 130). The handler is in place when this returns, so a Ctrl-C that comes before
/// the first piece of work is finished stops the command cleanly instead of killing it.
pub fn stop_on_ctrl_c(
    stopping: &'static str,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    #[cfg(unix)]
    {
        let mut interrupts =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?;
        tokio::spawn(async move {
            if interrupts.recv().await.is_some() {
                eprintln!("{stopping}");
                let _ = stop_tx.send(true);
                if interrupts.recv().await.is_some() {
                    std::process::exit(130);
                }
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("{stopping}");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    Ok(stop_rx)
}

/// The URL a socket address is reached at from this machine (an unspecified address is
/// reached on loopback).
pub fn local_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_owned(),
            SocketAddr::V6(_) => "[::1]".to_owned(),
        }
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("http://{ip}:{}", addr.port())
}
