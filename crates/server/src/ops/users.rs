//! Users: reading them (for app services and the user's own `/me`), deleting one for an app
//! service, and the user's own disconnect. Both ways out revoke the grant at Google first and
//! are honoured here even when Google cannot be reached: the revocation there is then queued
//! and retried until it gets through ([`RevocationOutcome::Queued`], audited as `queued`).

use crate::app::App;
use crate::ops::api_keys::Caller;
use crate::ops::{broker_code, store_code};
use grantkeeper_broker::{BrokerError, RevocationOutcome};
use grantkeeper_store::{GrantRecord, StoreError, UserPage, UserRecord};

/// Why a user operation did not go through.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no user with this sub")]
    NotFound,
    /// The grant could not be revoked, here or queued (nothing was deleted).
    #[error("revocation: {0}")]
    Revocation(BrokerError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl UserError {
    /// The contract's error code, as audit rows record the outcome.
    pub fn code(&self) -> &'static str {
        match self {
            UserError::NotFound => "not_found",
            UserError::Revocation(e) => broker_code(e),
            UserError::Store(e) => store_code(e),
        }
    }
}

/// One page of users with their grants, in `sub` order after `after`.
pub async fn list(app: &App, after: Option<&str>, limit: u32) -> Result<UserPage, StoreError> {
    app.store().list_users(after, limit).await
}

/// The user `sub` and their grant.
pub async fn get(app: &App, sub: &str) -> Result<(UserRecord, GrantRecord), UserError> {
    app.store().user(sub).await?.ok_or(UserError::NotFound)
}

/// An app service deletes the user `sub`: the grant is revoked at Google (or its revocation
/// queued), then the user is deleted with everything held for them. Audited as `delete_user`
/// under the caller's key id, with its outcome (`ok`, `queued` or the error's code).
pub async fn delete_user(
    app: &App,
    sub: &str,
    caller: &Caller,
) -> Result<RevocationOutcome, UserError> {
    let reason = format!("deleted by API key {}", caller.key_id());
    let result = revoke_and_delete(app, sub, &reason).await;
    app.audit()
        .record(
            caller.key_id(),
            Some(sub),
            "delete_user",
            String::new(),
            audit_outcome(&result),
        )
        .await;
    result
}

async fn revoke_and_delete(
    app: &App,
    sub: &str,
    reason: &str,
) -> Result<RevocationOutcome, UserError> {
    let revoked = app
        .broker()
        .revoke_or_queue(sub, reason)
        .await
        .map_err(UserError::Revocation)?;
    app.broker().forget(sub);
    if !app.store().delete_user(sub).await? {
        return Err(UserError::NotFound);
    }
    match revoked {
        RevocationOutcome::Revoked => tracing::info!(%sub, "user deleted"),
        RevocationOutcome::Queued => tracing::warn!(
            %sub,
            outcome = "queued",
            "user deleted here; Google could not revoke the grant, so its revocation there is queued and retried"
        ),
    }
    Ok(revoked)
}

/// The user asked to disconnect: revoke the grant at Google (its refresh token, or the access
/// token when no refresh token is held), mark it revoked with its tokens dropped, and end every
/// session of the user. Audited as `disconnect` (actor `session`).
pub async fn disconnect(app: &App, sub: &str) -> Result<RevocationOutcome, UserError> {
    let result = app
        .broker()
        .revoke_or_queue(sub, "disconnected by the user")
        .await
        .map_err(UserError::Revocation);
    app.audit()
        .record(
            "session",
            Some(sub),
            "disconnect",
            String::new(),
            audit_outcome(&result),
        )
        .await;
    let revoked = result?;
    app.store().delete_user_sessions(sub).await?;
    match revoked {
        RevocationOutcome::Revoked => tracing::info!(%sub, "user disconnected"),
        RevocationOutcome::Queued => tracing::warn!(
            %sub,
            outcome = "queued",
            "user disconnected here; Google could not revoke the grant, so its revocation there is queued and retried"
        ),
    }
    Ok(revoked)
}

fn audit_outcome(result: &Result<RevocationOutcome, UserError>) -> &'static str {
    match result {
        Ok(RevocationOutcome::Revoked) => "ok",
        Ok(RevocationOutcome::Queued) => "queued",
        Err(e) => e.code(),
    }
}
