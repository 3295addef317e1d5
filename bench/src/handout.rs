//! The hand-out figure: `POST /v1/users/{sub}/token` answered from the token cache, against
//! `GET /healthz` of the same server (the cost of HTTP itself), both loaded by wrk from its own
//! process, at each `--connections`. Figure: hand-out throughput / healthz throughput.

use crate::Ctx;
use crate::google::Google;
use crate::load::{Requests, Target, cpu_per_request, wrk, wrk_on};
use crate::report::Row;
use crate::server::{Deployment, Server};
use anyhow::Context;
use grantkeeper_core::{ExposeSecret, SecretString};
use std::time::Duration;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let google = Google::start().await?;
    let dir = ctx.dir("handout")?;
    let url = format!("sqlite://{}", dir.join("grantkeeper.db").display());
    let deployment = Deployment::new(&ctx.bin, &google, &url, &dir)?;
    let key = deployment.api_key()?;
    let server = deployment.serve().await?;
    let sub = sign_in(ctx, &google, &server, "handout@bench.example").await?;
    hand_out(ctx, &server, &sub, &key).await?;

    let healthz = Target::healthz(&server.url);
    let handout = Target {
        base: server.url.clone(),
        requests: Requests::Fixed {
            method: "POST",
            path: format!("/v1/users/{sub}/token"),
        },
        authorization: Some(key.clone()),
        content_type: None,
        requested_with: false,
    };
    // Warm both paths (connections, caches, the API key) before timing.
    let warm = Duration::from_secs(2);
    wrk(&ctx.script, &healthz, 64, warm).await?;
    wrk(&ctx.script, &handout, 64, warm).await?;
    for &connections in &ctx.opts.connections {
        eprintln!("  {connections} connections, {} s each", ctx.opts.duration);
        let (floor, floor_cpu) =
            wrk_on(&ctx.script, &healthz, connections, ctx.duration(), &server).await?;
        let (ours, ours_cpu) =
            wrk_on(&ctx.script, &handout, connections, ctx.duration(), &server).await?;
        ctx.table.add(Row::at_least(
            "handout",
            format!("cached token, {connections} connections"),
            format!(
                "GET /healthz: {}; {}",
                floor.describe(),
                cpu_per_request(floor_cpu, &floor)
            ),
            format!(
                "POST /v1/users/{{sub}}/token: {}; {}",
                ours.describe(),
                cpu_per_request(ours_cpu, &ours)
            ),
            ours.rate() / floor.rate(),
            0.8,
        ));
    }
    Ok(())
}

/// Signs a user in through `server`'s `/authcode` as a web client does; returns the sub.
pub async fn sign_in(
    ctx: &Ctx,
    google: &Google,
    server: &Server,
    email: &str,
) -> anyhow::Result<String> {
    let code = google.mint_code(email).await?;
    let answer = ctx
        .http
        .post(format!("{}/authcode", server.url))
        .header("x-requested-with", "grantkeeper-bench")
        .header("content-type", "text/plain")
        .body(code)
        .send()
        .await?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await?;
    anyhow::ensure!(status.is_success(), "sign-in answered {status}: {body}");
    Ok(body["user"]["sub"]
        .as_str()
        .context("the sign-in named no sub")?
        .to_owned())
}

/// One hand-out; fails unless it answers a token.
pub async fn hand_out(
    ctx: &Ctx,
    server: &Server,
    sub: &str,
    key: &SecretString,
) -> anyhow::Result<String> {
    let answer = ctx
        .http
        .post(format!("{}/v1/users/{sub}/token", server.url))
        .bearer_auth(key.expose_secret())
        .send()
        .await?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await?;
    anyhow::ensure!(
        status.is_success(),
        "the hand-out answered {status}: {}",
        body["error"]
    );
    Ok(body["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned())
}
