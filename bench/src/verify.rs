//! The verify figure: ID-token verification as the server does it (the provider's full
//! verification: header, key from the JWKS cache, RS256 signature, claims against our clock,
//! metrics) against the bare RS256 signature check of the same token with the same library
//! (jsonwebtoken on aws-lc-rs), in this process. Figure: floor ns / ours ns (1.0 = no overhead
//! beyond the signature). Rounds alternate between the two; each side's median round counts.

use crate::Ctx;
use crate::google::{Google, in_process_app};
use crate::report::{Row, thousands};
use anyhow::Context;
use grantkeeper_core::{ExposeSecret, SecretString};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: u32 = 10;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let google = Google::start().await?;
    let app = in_process_app(&google, &ctx.dir("verify")?, 64).await?;
    let provider = app.provider().clone();

    // A real ID token: a code exchanged at the emulator as a sign-in does.
    let code = google.mint_code("verify@bench.example").await?;
    let tokens = provider
        .exchange_code(&SecretString::from(code), "postmessage")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id_token = tokens
        .id_token
        .context("the exchange brought no ID token")?;
    // Fetches discovery and the JWKS once; later calls find the key in the cache.
    provider
        .verify_id_token(&id_token)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The floor's key: the same JWKS entry, decoded once.
    let token = id_token.expose_secret();
    let kid = jsonwebtoken::decode_header(token)?
        .kid
        .context("the ID token names no kid")?;
    let jwks: Value = ctx
        .http
        .get(format!("{}/oauth2/v3/certs", google.base))
        .send()
        .await?
        .json()
        .await?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .context("the JWKS lacks the token's kid")?;
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().context("no n")?,
        jwk["e"].as_str().context("no e")?,
    )?;
    let (message, signature) = token.rsplit_once('.').context("not a JWT")?;
    anyhow::ensure!(
        jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::RS256)?,
        "the bare signature check refused the token"
    );

    let per_round = (ctx.opts.verify_iterations / ROUNDS).max(1);
    let mut floor_ns = Vec::new();
    let mut ours_ns = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..per_round {
            let ok = jsonwebtoken::crypto::verify(
                black_box(signature),
                black_box(message.as_bytes()),
                &key,
                Algorithm::RS256,
            )?;
            black_box(ok);
        }
        floor_ns.push(started.elapsed().as_nanos() as f64 / f64::from(per_round));

        let started = Instant::now();
        for _ in 0..per_round {
            let claims = provider
                .verify_id_token(black_box(&id_token))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            black_box(claims);
        }
        ours_ns.push(started.elapsed().as_nanos() as f64 / f64::from(per_round));
    }
    let floor = median(&mut floor_ns);
    let ours = median(&mut ours_ns);
    let n = thousands(u64::from(per_round * ROUNDS));
    ctx.table.add(Row::at_least(
        "verify",
        format!("RS256 ID token, {n} each, 1 thread"),
        format!("bare signature check: {floor:.0} ns/op"),
        format!("full verification: {ours:.0} ns/op"),
        floor / ours,
        0.9,
    ));
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
