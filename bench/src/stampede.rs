//! The stampede figure: `--demands` concurrent hand-outs of one user whose access token has
//! expired, while the emulator's token endpoint answers after `--stampede-latency-ms`; the
//! floor is one upstream refresh, the figure the refreshes the emulator counted. With one
//! instance on SQLite, one on PostgreSQL, and two on one PostgreSQL database (demands split
//! between them). Goal: exactly 1, every demand answered with the same token.

use crate::Ctx;
use crate::google::Google;
use crate::handout::sign_in;
use crate::report::{Row, Verdict, thousands};
use crate::server::{Deployment, ScratchDatabase};
use grantkeeper_core::ExposeSecret;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NEXT_USER: AtomicU64 = AtomicU64::new(0);

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let google = Google::start().await?;
    let dir = ctx.dir("stampede-sqlite")?;
    let url = format!("sqlite://{}", dir.join("grantkeeper.db").display());
    case(ctx, &google, "one instance, SQLite", &url, &dir, 1).await?;
    if ctx.opts.no_postgres {
        return Ok(());
    }
    for instances in [1, 2] {
        let db = ScratchDatabase::create(&ctx.opts.postgres).await?;
        let dir = ctx.dir(&format!("stampede-postgres-{instances}"))?;
        let name = match instances {
            1 => "one instance, PostgreSQL",
            _ => "two instances, one PostgreSQL database",
        };
        let result = case(ctx, &google, name, &db.url, &dir, instances).await;
        db.drop_now().await?;
        result?;
    }
    Ok(())
}

async fn case(
    ctx: &Ctx,
    google: &Google,
    name: &str,
    store_url: &str,
    dir: &std::path::Path,
    instances: usize,
) -> anyhow::Result<()> {
    let deployment = Deployment::new(&ctx.bin, google, store_url, dir)?;
    let key = deployment.api_key()?;
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(deployment.serve().await?);
    }

    // The user's token lives 2 s; once it has expired, every demand needs a refresh.
    google
        .control("PUT", "settings", json!({"access_token_ttl_secs": 2}))
        .await?;
    let email = format!(
        "stampede-{}@bench.example",
        NEXT_USER.fetch_add(1, Ordering::Relaxed)
    );
    let first = servers
        .first()
        .ok_or_else(|| anyhow::anyhow!("no server"))?;
    let sub = sign_in(ctx, google, first, &email).await?;
    google
        .control("PUT", "settings", json!({"access_token_ttl_secs": 3600}))
        .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    google
        .control(
            "PUT",
            "faults",
            json!({"token": {"latency_ms": ctx.opts.stampede_latency_ms}}),
        )
        .await?;

    let before = google.stat("refreshes").await?;
    let n = ctx.opts.demands;
    // A client per demand: each opens its own connection, as separate callers would.
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let base = servers[i % servers.len()].url.clone();
        let url = format!("{base}/v1/users/{sub}/token");
        let key = key.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?;
            // Connected before the barrier, so that the demands leave together.
            http.get(format!("{base}/healthz"))
                .send()
                .await?
                .bytes()
                .await?;
            barrier.wait().await;
            let sent = Instant::now();
            let answer = http
                .post(url)
                .bearer_auth(key.expose_secret())
                .send()
                .await?;
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            anyhow::Ok((
                status,
                body["access_token"].as_str().map(str::to_owned),
                sent.elapsed(),
            ))
        });
    }
    let mut ok = 0usize;
    let mut failed = 0usize;
    let mut tokens = HashSet::new();
    let mut slowest = Duration::ZERO;
    while let Some(done) = tasks.join_next().await {
        match done? {
            Ok((200, Some(token), took)) => {
                ok += 1;
                tokens.insert(token);
                slowest = slowest.max(took);
            }
            _ => failed += 1,
        }
    }
    google.control("PUT", "faults", json!({})).await?;
    let refreshes = google.stat("refreshes").await? - before;

    let met = refreshes == 1 && ok == n;
    ctx.table.add(Row {
        scenario: "stampede",
        case: format!("{} demands, {name}", thousands(n as u64)),
        floor: format!(
            "1 refresh (upstream answers after {} ms)",
            ctx.opts.stampede_latency_ms
        ),
        ours: format!(
            "{refreshes} refresh{}; {ok} answered 200 ({failed} not), {} distinct token{}, slowest answer {:.2} s",
            if refreshes == 1 { "" } else { "es" },
            tokens.len(),
            if tokens.len() == 1 { "" } else { "s" },
            slowest.as_secs_f64()
        ),
        ratio: (refreshes > 0).then(|| 1.0 / refreshes as f64),
        goal: "exactly 1 refresh".to_owned(),
        verdict: if met { Verdict::Met } else { Verdict::Missed },
    });
    Ok(())
}
