//! The sweep figure: a `refresh` sweep over N users while the token endpoint answers after
//! `latency` ms. With `concurrency` refreshes in flight the ideal is N x latency / concurrency;
//! the figure is ideal / achieved (1.0 = no overhead at all). The ideal leaves out the upstream's
//! own CPU (an RS256 signature per refreshed ID token), which shares this machine's cores: each
//! concurrency is also timed from a bare client against the upstream alone, which shows where
//! the machine, not grantkeeper, sets the pace.

use crate::Ctx;
use crate::report::{Row, thousands};
use anyhow::Context;
use grantkeeper_broker::sweep::{Job, Outcome, SweepOptions, run_sweep};
use grantkeeper_core::{ExposeSecret, MasterKey, SecretString, SystemClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_server::config::{FileConfig, Settings};
use grantkeeper_server::ops::SignInRequest;
use grantkeeper_server::{App, Platform};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use url::Url;

/// An app on a fresh SQLite file with the emulator in this process, and `users` users signed
/// in (`user000000@example.com`...), each holding a refresh token and a fresh access token.
pub struct Population {
    /// Holds the SQLite file.
    pub _dir: tempfile::TempDir,
    pub app: App,
    /// The emulator's base URL.
    pub base: String,
    pub client: grantkeeper_emulator::OAuthClient,
    pub http: reqwest::Client,
    /// How long signing everyone in took.
    pub signed_in: Duration,
}

/// Signs `users` users in; the broker may run `refresh_concurrency` refreshes at once.
pub async fn population(users: usize, refresh_concurrency: usize) -> anyhow::Result<Population> {
    let dir = tempfile::tempdir()?;
    let clock = SystemClock::shared();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let emulator = Emulator::open(EmulatorOptions {
        base_url: Url::parse(&base)?,
        data_dir: None,
        clock: clock.clone(),
        control_api: true,
    })
    .await?;
    tokio::spawn(axum::serve(listener, emulator.router()).into_future());

    let client = emulator.web_client();
    let mut file = FileConfig::default();
    file.provider.issuer = Some(base.clone());
    file.provider.client_id = Some(client.client_id.clone());
    file.provider.client_secret = Some(client.client_secret.clone());
    file.provider.api_base = Some(base.clone());
    file.broker.refresh_concurrency = Some(refresh_concurrency);
    // The load comes from one key: the `/v1` limit per key is off, as in the other scenarios.
    file.limits.v1_per_second = Some(0);
    file.store.url = Some(format!("sqlite://{}", dir.path().join("bench.db").display()).into());
    let settings = Settings::from_file(&file, dir.path())?;
    let store = grantkeeper_store::open(settings.store_url.expose_secret()).await?;
    let master = MasterKey::from_base64(&MasterKey::generate_base64())?;
    let app = App::new(settings, store, std::sync::Arc::new(master), clock).await?;
    let http = reqwest::Client::new();

    eprintln!("signing in {users} users...");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..users {
        let (app, http, base, client_id) = (
            app.clone(),
            http.clone(),
            base.clone(),
            client.client_id.clone(),
        );
        tasks.spawn(async move {
            let code: serde_json::Value = http
                .post(format!("{base}/_emulator/codes"))
                .json(
                    &json!({"email": format!("user{i:06}@example.com"), "client_id": client_id,
                    "scope": "openid email https://www.googleapis.com/auth/drive.appdata",
                    "redirect_uri": "postmessage", "access_type": "offline"}),
                )
                .send()
                .await?
                .json()
                .await?;
            let code = SecretString::from(code["code"].as_str().context("no code")?.to_owned());
            let request = SignInRequest {
                code: &code,
                platform: Platform::Web,
                expected_sub: None,
            };
            grantkeeper_server::ops::sign_in(&app, request)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::Ok(())
        });
        while tasks.len() >= 32 {
            if let Some(r) = tasks.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let signed_in = started.elapsed();
    eprintln!(
        "signed in {users} users in {:.1} s",
        signed_in.as_secs_f64()
    );
    Ok(Population {
        _dir: dir,
        app,
        base,
        client,
        http,
        signed_in,
    })
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (users, latency_ms) = (ctx.opts.sweep_users, ctx.opts.sweep_latency_ms);
    let most = ctx
        .opts
        .sweep_concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1);
    // The sweep's concurrency is the figure's denominator: let the broker run as many.
    let Population {
        _dir,
        app,
        base,
        client,
        http,
        signed_in,
    } = population(users, most).await?;

    http.put(format!("{base}/_emulator/faults"))
        .json(&json!({"token": {"latency_ms": latency_ms}}))
        .send()
        .await?;

    for &concurrency in &ctx.opts.sweep_concurrency {
        sweep_at(
            ctx,
            &app,
            &http,
            &base,
            &client,
            users,
            latency_ms,
            concurrency,
            signed_in,
        )
        .await?;
    }
    Ok(())
}

/// One concurrency: the upstream alone, then the sweep, over the same signed-in users.
#[allow(clippy::too_many_arguments)]
async fn sweep_at(
    ctx: &Ctx,
    app: &App,
    http: &reqwest::Client,
    base: &str,
    client: &grantkeeper_emulator::OAuthClient,
    users: usize,
    latency_ms: u64,
    concurrency: usize,
    signed_in: Duration,
) -> anyhow::Result<()> {
    eprintln!("  concurrency {concurrency}");
    // The upstream alone: the same refreshes from a bare client at the same concurrency. The
    // emulator signs an ID token for every refresh (as Google does when `openid` was granted),
    // on this machine's cores, which the ideal leaves out.
    let upstream = upstream_alone(http, base, client, users, concurrency).await?;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let summary = run_sweep(
        app.broker(),
        app.store().clone(),
        app.api_http().clone(),
        app.settings().api_base.clone(),
        Job::Refresh,
        SweepOptions {
            concurrency,
            rate_per_sec: None,
            page_size: 500,
            ..SweepOptions::default()
        },
        stop,
        &|_| {},
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let achieved = started.elapsed();
    let ideal =
        Duration::from_millis(latency_ms) * u32::try_from(users)? / u32::try_from(concurrency)?;
    let ok = summary.counts.get(&Outcome::Ok).copied().unwrap_or(0);
    ctx.table.add(Row::at_least(
        "sweep",
        format!(
            "refresh, {} users, {latency_ms} ms upstream, concurrency {concurrency}",
            thousands(users as u64)
        ),
        format!(
            "ideal N x latency / concurrency: {:.2} s",
            ideal.as_secs_f64()
        ),
        format!(
            "{:.2} s, {} ok (setup: {} sign-ins in {:.1} s)",
            achieved.as_secs_f64(),
            thousands(ok as u64),
            thousands(users as u64),
            signed_in.as_secs_f64()
        ),
        ideal.as_secs_f64() / achieved.as_secs_f64(),
        0.9,
    ));
    ctx.table.add(Row::figure(
        "sweep",
        format!(
            "refresh, {} users, against the upstream alone",
            thousands(users as u64)
        ),
        format!(
            "the same refreshes from a bare client, concurrency {concurrency}: {:.2} s ({:.2} of the ideal)",
            upstream.as_secs_f64(),
            ideal.as_secs_f64() / upstream.as_secs_f64()
        ),
        format!("{:.2} s", achieved.as_secs_f64()),
        Some(upstream.as_secs_f64() / achieved.as_secs_f64()),
    ));
    Ok(())
}

/// Time of one refresh of every user's refresh token, straight at the emulator's token
/// endpoint, `concurrency` at a time.
async fn upstream_alone(
    http: &reqwest::Client,
    base: &str,
    client: &grantkeeper_emulator::OAuthClient,
    users: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let mut tokens = Vec::with_capacity(users);
    for i in 0..users {
        let held: serde_json::Value = http
            .get(format!("{base}/_emulator/tokens"))
            .query(&[("email", format!("user{i:06}@example.com"))])
            .send()
            .await?
            .json()
            .await?;
        let token = held["refresh_tokens"][0]
            .as_str()
            .context("the emulator holds no refresh token for a signed-in user")?;
        tokens.push(token.to_owned());
    }
    let secret = client.client_secret.expose_secret().to_owned();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let (http, url, id, secret) = (
            http.clone(),
            format!("{base}/token"),
            client.client_id.clone(),
            secret.clone(),
        );
        tasks.spawn(async move {
            let answer = http
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", id.as_str()),
                    ("client_secret", secret.as_str()),
                ])
                .send()
                .await?;
            anyhow::ensure!(
                answer.status().is_success(),
                "a bare refresh was answered {}",
                answer.status()
            );
            answer.bytes().await?;
            anyhow::Ok(())
        });
        while tasks.len() >= concurrency {
            if let Some(r) = tasks.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}
