//! Cross-Account Protection: what grantkeeper does when the provider reports a security event
//! about one of its users (reference §6.2).
//!
//! A verified event is recorded by its `jti` first, so that a redelivery (or the same event at
//! another instance) acts once; if acting fails, the record is dropped again so that the
//! provider's redelivery acts. Then, by event:
//!
//! | event | action |
//! |---|---|
//! | sessions-revoked | end the user's sessions |
//! | tokens-revoked | grant revoked with its tokens dropped (unless the held refresh token is newer than the event), forgotten by the broker, sessions ended |
//! | token-revoked | the grant holding that refresh token (found by fingerprint) revoked and forgotten |
//! | account-disabled, reason hijacking | as tokens-revoked, and Google sign-in of the account refused until account-enabled |
//! | account-disabled, other reasons | sessions ended |
//! | account-enabled | the sign-in block lifted |
//! | account-purged | the user deleted |
//! | account-credential-change-required, verification, unknown types | logged |
//!
//! Tokens named by an event are dead at Google already: nothing here calls the provider's
//! revocation endpoint. Every action writes an audit row (actor `risc`, the event's short
//! name, an outcome); grant state changes go through the store's grant events, so webhooks
//! hear of them. Logs name the `jti`, the event type and the `sub`, never the token or an
//! email.

use crate::app::App;
use crate::ops::store_code;
use aws_lc_rs::digest;
use grantkeeper_core::{ExposeSecret, GrantState, SecretString};
use grantkeeper_provider::risc::{
    DisabledReason, Event, MAX_EVENT_AGE, MAX_FUTURE_SKEW, RevokedToken, Subject,
    TOKEN_PREFIX_CHARS, TokenIdentifier,
};
use grantkeeper_provider::{SecurityEvent, SecurityEventError};
use grantkeeper_store::{SignInBlock, StateUpdate, StoreError, TokenLookup};
use std::time::Duration;
use time::OffsetDateTime;

/// The audit actor of everything done here.
pub const ACTOR: &str = "risc";
/// The grant's reason after a `tokens-revoked` or `token-revoked` event.
pub const TOKENS_REVOKED_REASON: &str = "RISC: tokens revoked at Google";
/// The grant's reason after an `account-disabled` event for hijacking.
pub const HIJACKING_REASON: &str = "RISC: account disabled at Google (hijacking)";
/// How often a fenced grant update is tried against concurrent writers.
const UPDATE_ATTEMPTS: u32 = 5;

/// What became of a security event token that verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// First receipt: acted on.
    Acted,
    /// Received before (same `jti`): nothing more done.
    Duplicate,
}

/// Why a security event token was not taken.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The token is not a valid security event for us: the provider should not deliver it
    /// again (RFC 8935's 400).
    #[error("{0}")]
    Rejected(SecurityEventError),
    /// The provider's keys could not be fetched: deliver again later.
    #[error("the provider's security event keys are unavailable; deliver again later")]
    KeysUnavailable,
    /// The grant kept changing while the event was applied: deliver again.
    #[error("the grant kept changing while a security event was applied; deliver again")]
    GrantBusy,
    /// The store failed: deliver again later.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl EventError {
    /// The contract's error code of a failure on our side; `None` for a rejected token,
    /// answered with RFC 8935's body instead.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            EventError::Rejected(_) => None,
            EventError::KeysUnavailable | EventError::GrantBusy => Some("upstream_unavailable"),
            EventError::Store(e) => Some(store_code(e)),
        }
    }
}

/// The account an action is about.
struct Target {
    sub: String,
    /// Whether we have a user with this sub.
    known: bool,
}

/// The `rt_prefix_hash` of a refresh token whose first characters are `prefix`, computed as
/// `grantkeeper_core::fingerprint` computes it (hex SHA-256 of the first 16 characters).
pub fn prefix_hash(prefix: &SecretString) -> String {
    let head: String = prefix
        .expose_secret()
        .chars()
        .take(TOKEN_PREFIX_CHARS)
        .collect();
    hex::encode(digest::digest(&digest::SHA256, head.as_bytes()).as_ref())
}

/// Verifies a security event token pushed by the provider and acts on its event, once per
/// `jti`.
pub async fn receive_security_event(app: &App, set: &SecretString) -> Result<Receipt, EventError> {
    let event = app.security_events().verify(set).await.map_err(|e| {
        if e.is_transient() {
            tracing::warn!(error = %e, "security event keys unavailable");
            EventError::KeysUnavailable
        } else {
            EventError::Rejected(e)
        }
    })?;
    let name = event.event.name();
    let now = app.clock().now();
    if !app
        .store()
        .record_security_event(&event.jti, name, now)
        .await?
    {
        tracing::debug!(jti = %event.jti, event = name, "security event received before; nothing more to do");
        return Ok(Receipt::Duplicate);
    }
    prune_security_events(app, now).await;
    if let Err(e) = act(app, &event, now).await {
        // Not acted on: let the provider's redelivery try again.
        if let Err(forget) = app.store().forget_security_event(&event.jti).await {
            tracing::error!(jti = %event.jti, event = name, error = %forget, "a security event could not be acted on, and its redelivery will be taken for a duplicate");
        }
        return Err(e);
    }
    Ok(Receipt::Acted)
}

/// Forgets `jti`s old enough that a token carrying them no longer verifies (its `iat`
/// would be past [`MAX_EVENT_AGE`]). Best effort: a failure only delays it.
async fn prune_security_events(app: &App, now: OffsetDateTime) {
    let horizon = MAX_EVENT_AGE + MAX_FUTURE_SKEW + Duration::from_secs(3600);
    if let Err(e) = app.store().prune_security_events(now - horizon).await {
        tracing::warn!(error = %e, "old security event ids could not be pruned");
    }
}

async fn act(app: &App, event: &SecurityEvent, now: OffsetDateTime) -> Result<(), EventError> {
    let name = event.event.name();
    let jti = event.jti.as_str();
    match &event.event {
        Event::SessionsRevoked(subject) => {
            for target in targets(app, event, subject).await? {
                let ended = app.store().delete_user_sessions(&target.sub).await?;
                let outcome = if target.known { "ok" } else { "unknown_user" };
                done(
                    app,
                    event,
                    Some(&target.sub),
                    format!("sessions ended: {ended}"),
                    outcome,
                )
                .await;
            }
        }
        Event::TokensRevoked(subject) => {
            for target in targets(app, event, subject).await? {
                let issued_at = OffsetDateTime::from_unix_timestamp(event.issued_at).ok();
                let outcome =
                    revoke_tokens(app, &target.sub, TOKENS_REVOKED_REASON, issued_at, now).await?;
                let ended = app.store().delete_user_sessions(&target.sub).await?;
                done(
                    app,
                    event,
                    Some(&target.sub),
                    format!("sessions ended: {ended}"),
                    outcome,
                )
                .await;
            }
        }
        Event::TokenRevoked(token) => token_revoked(app, event, token, now).await?,
        Event::AccountDisabled { subject, reason } => {
            let hijacking = matches!(reason, Some(DisabledReason::Hijacking));
            let reason_text = match reason {
                Some(DisabledReason::Hijacking) => "hijacking",
                Some(DisabledReason::BulkAccount) => "bulk-account",
                Some(DisabledReason::Other(other)) => other.as_str(),
                None => "none given",
            };
            for target in targets(app, event, subject).await? {
                let mut outcome = if target.known { "ok" } else { "unknown_user" };
                let mut detail = format!("reason: {reason_text}");
                if hijacking {
                    // An account in someone else's hands: every token may be theirs.
                    outcome = revoke_tokens(app, &target.sub, HIJACKING_REASON, None, now).await?;
                    app.store()
                        .block_sign_in(SignInBlock {
                            sub: target.sub.clone(),
                            reason: "account-disabled: hijacking".to_owned(),
                            blocked_at: now,
                        })
                        .await?;
                    detail.push_str("; sign-in blocked");
                }
                let ended = app.store().delete_user_sessions(&target.sub).await?;
                detail.push_str(&format!("; sessions ended: {ended}"));
                done(app, event, Some(&target.sub), detail, outcome).await;
            }
        }
        Event::AccountEnabled(subject) => {
            for target in targets(app, event, subject).await? {
                let lifted = app.store().lift_sign_in_block(&target.sub).await?;
                let outcome = match (lifted, target.known) {
                    (true, _) => "ok",
                    (false, true) => "not_blocked",
                    (false, false) => "unknown_user",
                };
                done(app, event, Some(&target.sub), String::new(), outcome).await;
            }
        }
        Event::AccountPurged(subject) => {
            for target in targets(app, event, subject).await? {
                let deleted = app.store().delete_user(&target.sub).await?;
                app.broker().forget(&target.sub);
                // Nothing is left to protect: the account is gone at Google too.
                app.store().lift_sign_in_block(&target.sub).await?;
                let outcome = if deleted { "ok" } else { "unknown_user" };
                done(
                    app,
                    event,
                    Some(&target.sub),
                    "user deleted".to_owned(),
                    outcome,
                )
                .await;
            }
        }
        Event::AccountCredentialChangeRequired(subject) => {
            for target in targets(app, event, subject).await? {
                let outcome = if target.known { "ok" } else { "unknown_user" };
                tracing::info!(%jti, event = name, sub = %target.sub, "Google asks the account to change its credentials; watch it for suspicious activity");
                done(app, event, Some(&target.sub), String::new(), outcome).await;
            }
        }
        Event::Verification { state } => {
            let state = state.as_deref().unwrap_or("");
            tracing::info!(%jti, event = name, %state, "received the provider's verification event");
            done(app, event, None, format!("state: {state}"), "ok").await;
        }
        Event::Unknown => {
            tracing::info!(%jti, event_type = %event.event_type, "ignored a security event of a type grantkeeper does not act on");
            done(
                app,
                event,
                None,
                format!("type: {}", event.event_type),
                "ignored",
            )
            .await;
        }
    }
    Ok(())
}

/// The accounts a subject names: by `sub`, that account (an unknown `sub` is still a target:
/// a block must hold for its first sign-in); by email, the one user whose verified email it
/// is. An email no user has verified names none (audited `unknown_user`), and one that
/// several users have verified names none either (audited `ambiguous`).
async fn targets(
    app: &App,
    event: &SecurityEvent,
    subject: &Subject,
) -> Result<Vec<Target>, EventError> {
    let targets = match subject {
        Subject::Sub(sub) => {
            let known = app.store().user(sub).await?.is_some();
            vec![Target {
                sub: sub.clone(),
                known,
            }]
        }
        Subject::Email(email) => {
            // Only an address the provider verified names an account; and one address that
            // several accounts held over time names none of them for sure.
            let subs = app.store().subs_by_email(email).await?;
            tracing::info!(jti = %event.jti, event = event.event.name(), matched = ?subs, "a security event named its subject by email: users with that verified email");
            if subs.len() > 1 {
                done(
                    app,
                    event,
                    None,
                    format!(
                        "the subject's email is the verified email of {} users ({}): none acted on",
                        subs.len(),
                        subs.join(", ")
                    ),
                    "ambiguous",
                )
                .await;
                return Ok(Vec::new());
            }
            subs.into_iter()
                .map(|sub| Target { sub, known: true })
                .collect()
        }
    };
    if targets.is_empty() {
        done(
            app,
            event,
            None,
            "no user has the subject's email, verified".to_owned(),
            "unknown_user",
        )
        .await;
    }
    Ok(targets)
}

/// Marks the grant of `sub` revoked with its tokens dropped (the provider revoked them
/// already) and forgets it. With `issued_at`, a refresh token received after that time is
/// newer than the event and kept. Returns the audit outcome.
async fn revoke_tokens(
    app: &App,
    sub: &str,
    reason: &str,
    issued_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<&'static str, EventError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(grant) = app.store().grant(sub).await? else {
            return Ok("unknown_user");
        };
        if let (Some(event_at), Some(received_at)) = (issued_at, grant.refresh_token_received_at)
            && grant.refresh_token.is_some()
            && received_at > event_at
        {
            tracing::info!(%sub, "kept a refresh token received after the tokens-revoked event was issued");
            return Ok("newer_grant");
        }
        let update = StateUpdate {
            state: GrantState::Revoked,
            reason: reason.to_owned(),
            error: None,
            drop_tokens: true,
            at: now,
        };
        // Fenced: a sign-in that brings a new token meanwhile is judged again.
        match app
            .store()
            .update_grant_state(sub, Some(grant.version), update)
            .await
        {
            Ok((_, changed)) => {
                app.broker().forget(sub);
                tracing::info!(%sub, state_changed = changed.is_some(), reason, "grant revoked on a security event");
                return Ok("ok");
            }
            Err(StoreError::Conflict) => continue,
            Err(StoreError::NotFound) => return Ok("unknown_user"),
            Err(e) => return Err(e.into()),
        }
    }
    Err(EventError::GrantBusy)
}

/// `token-revoked`: the grant whose held refresh token the event names.
async fn token_revoked(
    app: &App,
    event: &SecurityEvent,
    token: &RevokedToken,
    now: OffsetDateTime,
) -> Result<(), EventError> {
    let (lookup, by) = match &token.identifier {
        TokenIdentifier::Prefix(prefix) => (TokenLookup::PrefixHash(prefix_hash(prefix)), "prefix"),
        TokenIdentifier::Sha512Sha512(hash) => (TokenLookup::Hash(hash.clone()), "hash"),
    };
    if token.token_type != "refresh_token" {
        tracing::info!(jti = %event.jti, token_type = %token.token_type, "a revoked token of a kind grantkeeper does not keep");
        done(
            app,
            event,
            None,
            format!("token_type: {}", token.token_type),
            "unknown_token",
        )
        .await;
        return Ok(());
    }
    let subs = app.store().subs_by_refresh_token(&lookup).await?;
    match subs.as_slice() {
        [] => {
            tracing::debug!(jti = %event.jti, by, "no held refresh token matches a revoked one");
            done(
                app,
                event,
                None,
                format!("by {by}: no held token matches"),
                "unknown_token",
            )
            .await;
        }
        [sub] => {
            let outcome = revoke_tokens(app, sub, TOKENS_REVOKED_REASON, None, now).await?;
            done(app, event, Some(sub), format!("by {by}"), outcome).await;
        }
        _ => {
            // Revoking the wrong grant would be worse than waiting for its invalid_grant.
            tracing::warn!(jti = %event.jti, by, matches = subs.len(), "a revoked token's prefix matches several grants; none is revoked");
            done(
                app,
                event,
                None,
                format!("by {by}: {} grants match", subs.len()),
                "ambiguous",
            )
            .await;
        }
    }
    Ok(())
}

/// The audit row (and log line) of one action.
async fn done(app: &App, event: &SecurityEvent, sub: Option<&str>, detail: String, outcome: &str) {
    let name = event.event.name();
    // Events may precede sign-up, so an unknown user is routine, not news.
    let sub_shown = sub.unwrap_or("-");
    if outcome == "unknown_user" {
        tracing::debug!(jti = %event.jti, event = name, sub = sub_shown, detail = %detail, "security event for an unknown user");
    } else {
        tracing::info!(jti = %event.jti, event = name, sub = sub_shown, outcome, "acted on a security event");
    }
    let detail = if detail.is_empty() {
        format!("jti {}", event.jti)
    } else {
        format!("jti {}; {detail}", event.jti)
    };
    app.audit().record(ACTOR, sub, name, detail, outcome).await;
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_hash_is_the_stored_fingerprint_of_the_token() {
        let token = SecretString::from("1//0gAbCdEfGhIjKlMnOpQrStUvWxYz-0123456789".to_owned());
        let stored = grantkeeper_core::fingerprint(&token);
        let prefix: String = token.expose_secret().chars().take(16).collect();
        assert_eq!(prefix_hash(&SecretString::from(prefix)), stored.prefix_hash);
        // Given the whole token, only its first characters count.
        assert_eq!(prefix_hash(&token), stored.prefix_hash);
    }
}
