//! A store holding many users, written fast: rows built as a real sign-in leaves them (profile,
//! active grant with the granted scopes, refresh and access tokens sealed by the deployment's
//! vault for their rows, the refresh token's fingerprints) and written in bulk through the
//! store's own import (`TransferStore::import`, what `grantkeeper import` uses), a few thousand
//! rows per transaction. Signing a million users in one by one would take the better part of an
//! hour; these rows are the same to the server.
//!
//! Users are `1` followed by a 20-digit index (21 digits, as Google's subs), so that a load
//! script can name any of them without a list. Their access tokens stay valid for hours: a
//! hand-out opens the stored one and caches it, with no upstream call. The grant's state history
//! (one `grant_events` row per sign-in) is not written.

use crate::server::Deployment;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::{Aad, Clock, Scopes, SecretString, SystemClock, Vault, random};
use grantkeeper_store::{ExportKind, ExportRecord, SharedStore};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SUB_PREFIX: &str = "1";
pub const SUB_DIGITS: usize = 20;
/// Users per import transaction.
const BATCH: u64 = 2_000;
/// How long the stored access tokens stay valid.
const ACCESS_TOKEN_LIFETIME: i64 = 6 * 3600;

pub fn sub(i: u64) -> String {
    format!("{SUB_PREFIX}{i:0SUB_DIGITS$}")
}

pub struct Population {
    pub deployment: Deployment,
    pub store: SharedStore,
    vault: Arc<Vault>,
    /// Users written so far: indices `0..written`.
    pub written: u64,
}

impl Population {
    /// Opens (and migrates) the deployment's store and its vault, making the first data key
    /// as a first `serve` would.
    pub async fn open(deployment: Deployment) -> anyhow::Result<Population> {
        let store = grantkeeper_store::open(&deployment.store_url).await?;
        let vault = grantkeeper_server::vault::keyring::load_vault(
            store.as_ref(),
            &deployment.master_key()?,
            &SystemClock,
        )
        .await?;
        let vault = Arc::new(vault);
        Ok(Population {
            deployment,
            store,
            vault,
            written: 0,
        })
    }

    /// Writes users until `n` are written; returns how long it took. The rows of the next
    /// batch are built (sealed, fingerprinted) while the store writes the current one.
    pub async fn grow_to(&mut self, n: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut next = (self.written < n).then(|| self.build(self.written, n));
        while let Some(building) = next.take() {
            let (end, records) = building.await??;
            if end < n {
                next = Some(self.build(end, n));
            }
            let rows = records.len() as u64;
            let counts = self.store.import(records).await?;
            anyhow::ensure!(
                counts.inserted == rows,
                "the import wrote {} of {rows} rows",
                counts.inserted
            );
            self.written = end;
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("  ... {} users written", crate::report::thousands(end));
                last_report = Instant::now();
            }
        }
        Ok(started.elapsed())
    }

    /// The rows of users `from..` (one batch, at most up to `n`), built off the async threads.
    fn build(
        &self,
        from: u64,
        n: u64,
    ) -> tokio::task::JoinHandle<anyhow::Result<(u64, Vec<ExportRecord>)>> {
        let vault = self.vault.clone();
        tokio::task::spawn_blocking(move || {
            let end = (from + BATCH).min(n);
            let scopes = Scopes::parse(crate::google::SCOPES).to_string();
            let now = SystemClock.now().unix_timestamp();
            let mut records = Vec::with_capacity(2 * (end - from) as usize);
            for i in from..end {
                let (user, grant) = rows(&vault, i, now, &scopes)?;
                records.push(user);
                records.push(grant);
            }
            Ok((end, records))
        })
    }
}

fn rows(
    vault: &Vault,
    i: u64,
    now: i64,
    scopes: &str,
) -> anyhow::Result<(ExportRecord, ExportRecord)> {
    let sub = sub(i);
    let refresh = SecretString::from(format!("1//0{}", random::token::<64>()));
    let access = SecretString::from(format!("ya29.a0{}", random::token::<96>()));
    let fingerprint = grantkeeper_core::fingerprint(&refresh);
    let sealed_refresh = vault.seal_secret(&refresh, Aad::refresh_token(&sub))?;
    let sealed_access = vault.seal_secret(&access, Aad::access_token(&sub))?;
    let user = object(json!({
        "sub": sub, "email": format!("user{i}@bench.example"), "email_verified": true,
        "name": format!("Bench User {i}"), "picture": null, "given_name": "Bench",
        "family_name": format!("User {i}"), "locale": "en", "hd": null,
        "created_at": now, "updated_at": now, "last_sign_in_at": now,
    }));
    let grant = object(json!({
        "sub": sub, "state": "active", "scopes": scopes,
        "refresh_token": STANDARD.encode(sealed_refresh),
        "rt_hash": fingerprint.hash, "rt_prefix_hash": fingerprint.prefix_hash,
        "refresh_token_received_at": now,
        "access_token": STANDARD.encode(sealed_access),
        "access_token_expires_at": now + ACCESS_TOKEN_LIFETIME,
        "reason": "refresh token received at sign-in", "state_changed_at": now,
        "updated_at": now, "last_refresh_at": null, "last_error": null, "version": 1,
    }));
    Ok((
        ExportRecord {
            kind: ExportKind::User,
            row: user,
        },
        ExportRecord {
            kind: ExportKind::Grant,
            row: grant,
        },
    ))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
