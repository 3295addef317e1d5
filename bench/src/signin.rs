//! The sign-in figure: `POST /authcode` (code exchange at the emulator, ID-token verification,
//! sealing, one store transaction, a session) against the emulator's `/token` alone, the part
//! of a sign-in that is Google's (the upstream floor). Both are loaded by wrk with single-use
//! codes minted beforehand through the emulator's control API: wrk's threads take the codes of
//! one file in turn, each code once, so the run is as long as the others and its percentiles
//! come from wrk. Enough codes are minted for 1.5 times the rate a one-second warm-up reached;
//! a run that runs out is refused rather than counted.

use crate::Ctx;
use crate::google::Google;
use crate::load::{Outcome, Requests, Target, cpu_per_request, write_bodies, wrk};
use crate::report::Row;
use crate::server::{Deployment, ScratchDatabase, Server};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static BATCH: AtomicU64 = AtomicU64::new(0);

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let google = Google::start().await?;
    let connections = ctx.opts.signin_connections;
    let floor = measure_floor(ctx, &google, connections, ctx.duration()).await?;
    let floor_text = format!("emulator POST /token: {}", floor.describe());

    let dir = ctx.dir("signin-sqlite")?;
    let url = format!("sqlite://{}", dir.join("grantkeeper.db").display());
    let ours = store_case(ctx, &google, &url, &dir, floor.rate()).await?;
    ctx.table
        .add(row("SQLite", connections, &floor_text, &floor, &ours));

    if ctx.opts.no_postgres {
        return Ok(());
    }
    let db = ScratchDatabase::create(&ctx.opts.postgres).await?;
    let dir = ctx.dir("signin-postgres")?;
    let ours = store_case(ctx, &google, &db.url, &dir, floor.rate()).await;
    db.drop_now().await?;
    let ours = ours?;
    ctx.table
        .add(row("PostgreSQL", connections, &floor_text, &floor, &ours));
    Ok(())
}

fn row(
    store: &str,
    connections: u32,
    floor_text: &str,
    floor: &Outcome,
    (ours, cpu): &(Outcome, Duration),
) -> Row {
    Row::figure(
        "signin",
        format!("{store}, {connections} connections"),
        floor_text.to_owned(),
        format!(
            "POST /authcode: {}; {}",
            ours.describe(),
            cpu_per_request(*cpu, ours)
        ),
        Some(ours.rate() / floor.rate()),
    )
}

async fn store_case(
    ctx: &Ctx,
    google: &Google,
    store_url: &str,
    dir: &std::path::Path,
    floor_rate: f64,
) -> anyhow::Result<(Outcome, Duration)> {
    let deployment = Deployment::new(&ctx.bin, google, store_url, dir)?;
    deployment.migrate()?;
    let server = deployment.serve().await?;
    measure_authcode(
        ctx,
        google,
        &server,
        ctx.opts.signin_connections,
        ctx.duration(),
        floor_rate,
    )
    .await
}

/// The emulator's `/token` alone, with fresh codes.
pub async fn measure_floor(
    ctx: &Ctx,
    google: &Google,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let target = |file| Target {
        base: google.base.clone(),
        requests: Requests::Bodies {
            path: "/token".to_owned(),
            file,
        },
        authorization: None,
        content_type: Some("application/x-www-form-urlencoded"),
        requested_with: false,
    };
    let runs = Runs {
        ctx,
        google,
        connections,
        target: &target,
        body: &|code| google.token_form(code),
        server: None,
    };
    Ok(runs.measure(duration, 2000.0).await?.0)
}

/// `server`'s `/authcode`, with fresh codes (each a new user), sent as a web client sends them;
/// also the server's CPU time during the timed run.
pub async fn measure_authcode(
    ctx: &Ctx,
    google: &Google,
    server: &Server,
    connections: u32,
    duration: Duration,
    guess: f64,
) -> anyhow::Result<(Outcome, Duration)> {
    let target = |file| Target {
        base: server.url.clone(),
        requests: Requests::Bodies {
            path: "/authcode".to_owned(),
            file,
        },
        authorization: None,
        content_type: Some("text/plain"),
        requested_with: true,
    };
    let runs = Runs {
        ctx,
        google,
        connections,
        target: &target,
        body: &|code| Ok(code.to_owned()),
        server: Some(server),
    };
    runs.measure(duration, guess).await
}

/// wrk runs that each send fresh codes.
struct Runs<'a> {
    ctx: &'a Ctx,
    google: &'a Google,
    connections: u32,
    target: &'a dyn Fn(PathBuf) -> Target,
    /// The request body carrying a code.
    body: &'a dyn Fn(&str) -> anyhow::Result<String>,
    /// Whose CPU time is measured.
    server: Option<&'a Server>,
}

impl Runs<'_> {
    /// A one-second warm-up with codes for twice `guess` per second, then the timed run with
    /// codes for 1.5 times the warm-up's rate (doubled and run again if that ran out).
    async fn measure(&self, duration: Duration, guess: f64) -> anyhow::Result<(Outcome, Duration)> {
        let mut warm_codes = (guess * 2.0) as usize + 200;
        let warm = loop {
            match self.run(Duration::from_secs(1), warm_codes).await {
                Err(e) if e.to_string().contains("ran out") && warm_codes < 1_000_000 => {
                    warm_codes *= 4;
                }
                other => break other?.0,
            }
        };
        let mut codes = (warm.rate() * 1.5 * duration.as_secs_f64()) as usize + 500;
        for attempt in 0..2 {
            match self.run(duration, codes).await {
                Err(e) if e.to_string().contains("ran out") && attempt == 0 => codes *= 2,
                other => return other,
            }
        }
        anyhow::bail!("wrk ran out of codes twice")
    }

    async fn run(&self, duration: Duration, n: usize) -> anyhow::Result<(Outcome, Duration)> {
        let batch = BATCH.fetch_add(1, Ordering::Relaxed);
        let codes = self.google.mint_codes(&format!("s{batch}-"), n).await?;
        let bodies = codes
            .iter()
            .map(|c| (self.body)(c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let file = self.ctx.work.path().join(format!("bodies-{batch}.txt"));
        write_bodies(&file, &bodies)?;
        let before = self.server.map(Server::cpu).transpose()?;
        let outcome = wrk(
            &self.ctx.script,
            &(self.target)(file.clone()),
            self.connections,
            duration,
        )
        .await;
        let cpu = match (self.server, before) {
            (Some(server), Some(before)) => server.cpu()?.saturating_sub(before),
            _ => Duration::ZERO,
        };
        let _ = std::fs::remove_file(&file);
        Ok((outcome?, cpu))
    }
}
