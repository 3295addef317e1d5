//! Load from a separate process: wrk (Debian's package), driven by `lua/gk.lua`, whose `done()`
//! prints the totals and latency percentiles as one JSON line.

use crate::report::{ms, thousands};
use anyhow::Context;
use grantkeeper_core::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The wrk script, written next to the run's other files.
pub const SCRIPT: &str = include_str!("../lua/gk.lua");

/// What each request is.
#[derive(Clone)]
pub enum Requests {
    /// The same request every time.
    Fixed { method: &'static str, path: String },
    /// `POST path` with one line of the file as body, each line once.
    Bodies { path: String, file: PathBuf },
    /// `POST /v1/users/{sub}/token` for a sub drawn uniformly among `users` subs
    /// `{prefix}{index:0digits}`.
    RandomUser {
        users: u64,
        prefix: String,
        digits: usize,
    },
}

#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub requests: Requests,
    pub authorization: Option<SecretString>,
    pub content_type: Option<&'static str>,
    pub requested_with: bool,
}

impl Target {
    /// `GET /healthz` of the server at `base`: the HTTP floor.
    pub fn healthz(base: &str) -> Target {
        Target {
            base: base.to_owned(),
            requests: Requests::Fixed {
                method: "GET",
                path: "/healthz".to_owned(),
            },
            authorization: None,
            content_type: None,
            requested_with: false,
        }
    }
}

/// What `done()` reports; times in microseconds.
#[derive(Clone, Debug, Deserialize)]
pub struct Outcome {
    pub requests: u64,
    pub duration_us: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub status_errors: u64,
    pub timeouts: u64,
    pub exhausted: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Outcome {
    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
    }

    /// `12,345 req/s, p50 1.23 ms, p99 4.56 ms`, and the errors if any.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} req/s, p50 {}, p99 {}",
            thousands(self.rate().round() as u64),
            ms(self.p50_us as f64),
            ms(self.p99_us as f64)
        );
        if self.errors() > 0 {
            s.push_str(&format!(
                " ({} errors: {} status, {} connect, {} read, {} write, {} timeouts)",
                self.errors(),
                self.status_errors,
                self.connect_errors,
                self.read_errors,
                self.write_errors,
                self.timeouts
            ));
        }
        s
    }
}

/// Runs wrk as [`wrk`] does, and also returns the CPU time `server` used meanwhile.
pub async fn wrk_on(
    script: &Path,
    target: &Target,
    connections: u32,
    duration: Duration,
    server: &crate::server::Server,
) -> anyhow::Result<(Outcome, Duration)> {
    let before = server.cpu()?;
    let outcome = wrk(script, target, connections, duration).await?;
    Ok((outcome, server.cpu()?.saturating_sub(before)))
}

/// `server CPU 12.3 µs/req`: the server's CPU time over the requests wrk completed.
pub fn cpu_per_request(cpu: Duration, outcome: &Outcome) -> String {
    format!(
        "server CPU {:.0} µs/req",
        cpu.as_secs_f64() * 1e6 / outcome.requests.max(1) as f64
    )
}

/// Runs wrk with `connections` connections for `duration` and returns its figures. A run that
/// ran out of single-use bodies is refused (its later requests repeated spent codes), and so is
/// one where any request was answered 4xx or 5xx.
pub async fn wrk(
    script: &Path,
    target: &Target,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let threads = connections.clamp(1, 2);
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(script)
        .env("GK_THREADS", threads.to_string())
        .env_remove("GK_AUTH");
    match &target.requests {
        Requests::Fixed { method, path } => {
            cmd.env("GK_MODE", "static")
                .env("GK_METHOD", method)
                .env("GK_PATH", path);
        }
        Requests::Bodies { path, file } => {
            cmd.env("GK_MODE", "bodies")
                .env("GK_METHOD", "POST")
                .env("GK_PATH", path)
                .env("GK_BODIES", file);
        }
        Requests::RandomUser {
            users,
            prefix,
            digits,
        } => {
            cmd.env("GK_MODE", "random")
                .env("GK_METHOD", "POST")
                .env("GK_USERS", users.to_string())
                .env("GK_SUB_PREFIX", prefix)
                .env("GK_SUB_DIGITS", digits.to_string());
        }
    }
    if let Some(key) = &target.authorization {
        cmd.env("GK_AUTH", format!("Bearer {}", key.expose_secret()));
    }
    if let Some(ct) = target.content_type {
        cmd.env("GK_CT", ct);
    }
    if target.requested_with {
        cmd.env("GK_XRW", "grantkeeper-bench");
    }
    cmd.arg(&target.base);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running wrk (apt-get install -y wrk, or bench/run.sh)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("GKBENCH "))
        .with_context(|| format!("wrk printed no GKBENCH line: {stdout}"))?;
    let outcome: Outcome = serde_json::from_str(line)?;
    anyhow::ensure!(
        outcome.exhausted == 0,
        "wrk ran out of single-use request bodies ({} repeated): mint more",
        outcome.exhausted
    );
    anyhow::ensure!(
        outcome.status_errors == 0,
        "{} of {} requests were answered 4xx or 5xx",
        outcome.status_errors,
        outcome.requests
    );
    anyhow::ensure!(outcome.requests > 0, "wrk completed no request");
    Ok(outcome)
}

/// Writes one body per line (codes and form bodies hold no newline).
pub fn write_bodies(path: &Path, bodies: &[String]) -> anyhow::Result<()> {
    let mut text = String::with_capacity(bodies.iter().map(|b| b.len() + 1).sum());
    for body in bodies {
        anyhow::ensure!(!body.contains('\n'), "a request body holds a newline");
        text.push_str(body);
        text.push('\n');
    }
    crate::server::write_private(path, text.as_bytes())
}
