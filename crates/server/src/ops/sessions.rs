//! Sessions of browsers and mobile apps: a random secret held by the client (the HTTP layer's
//! HttpOnly cookie), its SHA-256 in the store. The store keeps at most
//! [`grantkeeper_store::MAX_SESSIONS_PER_USER`] live ones per user (the oldest go when a
//! sign-in opens another); the expired ones are purged in the background
//! ([`crate::session`]).

use crate::app::App;
use aws_lc_rs::digest;
use grantkeeper_core::{ExposeSecret, SecretString};
use grantkeeper_store::{SessionRecord, StoreError};
use std::time::Duration;
use time::OffsetDateTime;

/// A session just opened: its secret, which only the client keeps (the store has its
/// SHA-256), and how long it lasts (`server.session_ttl`).
#[derive(Debug)]
pub struct NewSession {
    pub secret: SecretString,
    pub expires_at: OffsetDateTime,
    pub ttl: Duration,
}

/// Why a session names no user.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown, expired, ended by a logout, a disconnect or a security event.
    #[error("the session has ended; sign in again")]
    Ended,
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Opens a session for `sub` (a user signed in some other way than [`crate::ops::sign_in`],
/// which opens its own in its transaction).
pub async fn open(app: &App, sub: &str) -> Result<NewSession, StoreError> {
    let (record, session) = fresh(app);
    app.store()
        .create_session(SessionRecord {
            sub: sub.to_owned(),
            ..record
        })
        .await?;
    Ok(session)
}

/// The `sub` of the user whose session `secret` names.
pub async fn user_of(app: &App, secret: &SecretString) -> Result<String, SessionError> {
    let session = app
        .store()
        .session(&hash(secret), app.clock().now())
        .await?
        .ok_or(SessionError::Ended)?;
    Ok(session.sub)
}

/// Ends the session `secret` names, if it is live.
pub async fn end(app: &App, secret: &SecretString) -> Result<(), StoreError> {
    app.store().delete_session(&hash(secret)).await?;
    Ok(())
}

/// A new session (its `sub` still to be filled in) and its secret; nothing is stored yet.
pub(crate) fn fresh(app: &App) -> (SessionRecord, NewSession) {
    let secret = grantkeeper_core::random::token::<32>();
    let now = app.clock().now();
    let ttl = app.settings().session_ttl;
    let record = SessionRecord {
        id_hash: hex_sha256(&secret),
        sub: String::new(),
        created_at: now,
        expires_at: now + ttl,
    };
    let session = NewSession {
        secret: SecretString::from(secret),
        expires_at: record.expires_at,
        ttl,
    };
    (record, session)
}

fn hash(secret: &SecretString) -> String {
    hex_sha256(secret.expose_secret())
}

fn hex_sha256(secret: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}
