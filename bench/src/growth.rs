//! The growth and memory figures, on one SQLite deployment whose store is filled in bulk
//! (`population`) to each size in turn.
//!
//! growth: at each `--sizes` count of stored users, a fresh `serve` process is measured for
//! sign-in (`/authcode` of new users against the emulator's `/token`, as `signin`) and for
//! hand-outs of a user drawn uniformly among all the stored ones (against `/healthz`): the
//! first hand-out of a user reads and opens its stored token, later ones come from the cache,
//! so the larger the store the more hand-outs go to it (the share served from the cache is
//! given, from the server's own counters).
//!
//! memory: a fresh `serve` process on a store of `--memory-users` users is handed tokens for
//! `--cached` distinct users (each handed once, so the token cache holds that many), then
//! scraped once at /metrics; the figure is its peak resident set (VmHWM) against the same
//! process before any request (the floor). Goal: at most `--memory-goal-mb` MB (10^6 bytes).

use crate::Ctx;
use crate::google::Google;
use crate::load::{Requests, Target, cpu_per_request, wrk_on};
use crate::population::{Population, SUB_DIGITS, SUB_PREFIX, sub};
use crate::report::{Row, Verdict, thousands};
use crate::server::{Deployment, Server};
use crate::signin;
use grantkeeper_core::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MB: f64 = 1e6;

pub async fn run(ctx: &Ctx, growth: bool, memory: bool) -> anyhow::Result<()> {
    let google = Google::start().await?;
    let dir = ctx.dir("population")?;
    let url = format!("sqlite://{}", dir.join("grantkeeper.db").display());
    let deployment = Deployment::new(&ctx.bin, &google, &url, &dir)?;
    let key = deployment.api_key()?;
    let mut population = Population::open(deployment).await?;

    if growth {
        let mut sizes = ctx.opts.sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            grow(&mut population, size).await?;
            measure_size(ctx, &google, &population, &key).await?;
        }
    }
    if memory {
        grow(&mut population, ctx.opts.memory_users).await?;
        measure_memory(ctx, &population, &key).await?;
    }
    Ok(())
}

async fn grow(population: &mut Population, size: u64) -> anyhow::Result<()> {
    if population.written >= size {
        return Ok(());
    }
    let from = population.written;
    eprintln!("  writing users {} to {}", thousands(from), thousands(size));
    let took = population.grow_to(size).await?;
    eprintln!(
        "  wrote {} users in {:.1} s ({:.0} users/s)",
        thousands(size - from),
        took.as_secs_f64(),
        (size - from) as f64 / took.as_secs_f64()
    );
    Ok(())
}

async fn measure_size(
    ctx: &Ctx,
    google: &Google,
    population: &Population,
    key: &SecretString,
) -> anyhow::Result<()> {
    let server = population.deployment.serve().await?;
    let stored = population.store.count_users().await?;
    let duration = Duration::from_secs(ctx.opts.growth_duration);
    let connections = ctx.opts.signin_connections;
    eprintln!("  {} stored users", thousands(stored));

    let floor = signin::measure_floor(ctx, google, connections, duration).await?;
    let (ours, ours_cpu) =
        signin::measure_authcode(ctx, google, &server, connections, duration, floor.rate()).await?;
    ctx.table.add(Row::figure(
        "growth",
        format!(
            "sign-in, {} stored users, SQLite, {connections} connections",
            thousands(stored)
        ),
        format!("emulator POST /token: {}", floor.describe()),
        format!(
            "POST /authcode: {}; {}",
            ours.describe(),
            cpu_per_request(ours_cpu, &ours)
        ),
        Some(ours.rate() / floor.rate()),
    ));

    let healthz = Target::healthz(&server.url);
    let random = Target {
        base: server.url.clone(),
        requests: Requests::RandomUser {
            users: population.written,
            prefix: SUB_PREFIX.to_owned(),
            digits: SUB_DIGITS,
        },
        authorization: Some(key.clone()),
        content_type: None,
        requested_with: false,
    };
    let (floor, floor_cpu) = wrk_on(&ctx.script, &healthz, 64, duration, &server).await?;
    let hits_before = server
        .metric(&ctx.http, "grantkeeper_token_cache_hits_total")
        .await?;
    let misses_before = server
        .metric(&ctx.http, "grantkeeper_token_cache_misses_total")
        .await?;
    let (ours, ours_cpu) = wrk_on(&ctx.script, &random, 64, duration, &server).await?;
    let hits = server
        .metric(&ctx.http, "grantkeeper_token_cache_hits_total")
        .await?
        - hits_before;
    let misses = server
        .metric(&ctx.http, "grantkeeper_token_cache_misses_total")
        .await?
        - misses_before;
    let from_cache = if hits + misses > 0.0 {
        100.0 * hits / (hits + misses)
    } else {
        0.0
    };
    ctx.table.add(Row::figure(
        "growth",
        format!(
            "hand-out of a random user of {} stored, 64 connections",
            thousands(population.written)
        ),
        format!(
            "GET /healthz: {}; {}",
            floor.describe(),
            cpu_per_request(floor_cpu, &floor)
        ),
        format!(
            "POST /v1/users/{{sub}}/token: {}; {}; {from_cache:.0}% from the cache",
            ours.describe(),
            cpu_per_request(ours_cpu, &ours)
        ),
        Some(ours.rate() / floor.rate()),
    ));
    Ok(())
}

async fn measure_memory(
    ctx: &Ctx,
    population: &Population,
    key: &SecretString,
) -> anyhow::Result<()> {
    let server = population.deployment.serve().await?;
    let stored = population.store.count_users().await?;
    // Up and ready (store and vault usable) before the floor is read.
    let ready = ctx
        .http
        .get(format!("{}/readyz", server.url))
        .send()
        .await?;
    anyhow::ensure!(
        ready.status().is_success(),
        "/readyz answered {}",
        ready.status()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let floor = server.status_bytes("VmHWM")?;

    let cached = ctx.opts.cached.min(population.written);
    eprintln!(
        "  handing out tokens of {} users, {} stored",
        thousands(cached),
        thousands(stored)
    );
    let started = Instant::now();
    warm(ctx, &server, key, cached).await?;
    let warm_rate = cached as f64 / started.elapsed().as_secs_f64();
    let misses = server
        .metric(&ctx.http, "grantkeeper_token_cache_misses_total")
        .await?;
    anyhow::ensure!(
        misses as u64 >= cached,
        "the server counted {misses} cache misses for {cached} first hand-outs"
    );
    let peak = server.status_bytes("VmHWM")?;
    let now = server.status_bytes("VmRSS")?;
    let goal = ctx.opts.memory_goal_mb as f64 * MB;
    let met = (peak as f64) <= goal;
    ctx.table.add(Row {
        scenario: "memory",
        case: format!(
            "{} stored users, {} cached tokens, SQLite",
            thousands(stored),
            thousands(cached)
        ),
        floor: format!(
            "same process, started, before any request: {:.1} MB peak RSS",
            floor as f64 / MB
        ),
        ours: format!(
            "{:.1} MB peak RSS (VmHWM), {:.1} MB resident at the end; {} cache misses, \
             {:.0} first hand-outs/s",
            peak as f64 / MB,
            now as f64 / MB,
            thousands(misses as u64),
            warm_rate
        ),
        ratio: Some(peak as f64 / floor as f64),
        goal: format!("peak <= {} MB", ctx.opts.memory_goal_mb),
        verdict: if met { Verdict::Met } else { Verdict::Missed },
    });
    Ok(())
}

/// Hands out a token to each of the users `0..count` once, 64 at a time, each answered 200.
async fn warm(ctx: &Ctx, server: &Server, key: &SecretString, count: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (next, http, url, key) = (
            next.clone(),
            ctx.http.clone(),
            server.url.clone(),
            key.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let answer = http
                    .post(format!("{url}/v1/users/{}/token", sub(i)))
                    .bearer_auth(key.expose_secret())
                    .send()
                    .await?;
                anyhow::ensure!(
                    answer.status().is_success(),
                    "a hand-out answered {}",
                    answer.status()
                );
                answer.bytes().await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
