//! Sign-in: a one-time code in; a verified user, their grant with the refresh token sealed, a
//! new session, an audit row and a counted outcome out.
//!
//! exchange (redirect URI by platform) -> verify the ID token -> seal -> one store transaction
//! (refuse a blocked account; else user, grant, session) -> audit. Nothing is written before the
//! ID token is verified, and the refresh token is committed before the caller hears of success.

use crate::app::App;
use crate::ops::sessions::{self, NewSession};
use crate::ops::{store_code, vault_code};
use grantkeeper_core::{Aad, SecretString, UserProfile, Vault, VaultError};
use grantkeeper_provider::{IdTokenError, ProviderError, TokenResponse};
use grantkeeper_store::{
    GrantRecord, SealedAccessToken, SealedRefreshToken, SessionRecord, SignIn, SignInBlock,
    SignInOutcome, SignInRecorded, StoreError, UserRecord,
};
use serde::Deserialize;
use std::str::FromStr;

/// Where a code was minted; decides the redirect URI sent at exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Web,
    Android,
    Ios,
}

impl Platform {
    /// `web`, `android` or `ios`, as the HTTP contract and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Web => "web",
            Platform::Android => "android",
            Platform::Ios => "ios",
        }
    }
}

/// A platform name that is none of `web`, `android` and `ios`.
#[derive(Debug, thiserror::Error)]
#[error("platform must be web, android or ios, not {0:?}")]
pub struct UnknownPlatform(String);

impl FromStr for Platform {
    type Err = UnknownPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "web" => Ok(Platform::Web),
            "android" => Ok(Platform::Android),
            "ios" => Ok(Platform::Ios),
            // Shortened: the name is the client's input, echoed back in the message.
            other => Err(UnknownPlatform(other.chars().take(20).collect())),
        }
    }
}

/// What a sign-in needs.
#[derive(Clone, Copy, Debug)]
pub struct SignInRequest<'a> {
    /// The one-time authorization code from Google's sign-in.
    pub code: &'a SecretString,
    pub platform: Platform,
    /// Incremental authorization for a signed-in user: the code must be this account's, or
    /// it is refused ([`SignInError::AnotherAccount`]) and nothing is recorded.
    pub expected_sub: Option<&'a str>,
}

/// A sign-in that went through: what the store recorded, and the session it opened.
#[derive(Debug)]
pub struct SignedIn {
    pub user: UserRecord,
    pub grant: GrantRecord,
    /// True when this sign-in created the user.
    pub created: bool,
    /// The user's new session: its secret goes to the client (the HTTP route's cookie).
    pub session: NewSession,
}

/// Why a sign-in did not go through. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(
        "the code carries no identity scope, so the user cannot be identified: request openid, \
         email or profile with it"
    )]
    NoIdentityScope,
    #[error(
        "the code is for another Google account than the one it was asked for; nothing was \
         changed: choose the signed-in account in Google's window"
    )]
    AnotherAccount,
    #[error(
        "Google reported this account as compromised and disabled it; sign-in stays refused \
         until Google re-enables the account"
    )]
    Blocked,
    /// The provider did not exchange the code (rejected, unreachable, misconfigured).
    #[error("code exchange: {0}")]
    Exchange(ProviderError),
    #[error("ID token: {0}")]
    IdToken(IdTokenError),
    #[error("vault: {0}")]
    Vault(VaultError),
    #[error("store: {0}")]
    Store(StoreError),
}

impl SignInError {
    /// The contract's error code, as the metrics count the outcome.
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::NoIdentityScope => "invalid_request",
            SignInError::AnotherAccount | SignInError::Blocked => "forbidden",
            SignInError::Exchange(ProviderError::InvalidGrant { .. }) => "code_rejected",
            SignInError::Exchange(
                ProviderError::RateLimited { .. } | ProviderError::Unavailable { .. },
            ) => "upstream_unavailable",
            SignInError::Exchange(_) => "upstream_error",
            SignInError::IdToken(IdTokenError::KeysUnavailable(_)) => "upstream_unavailable",
            SignInError::IdToken(_) => "id_token_invalid",
            SignInError::Vault(e) => vault_code(e),
            SignInError::Store(e) => store_code(e),
        }
    }
}

impl From<StoreError> for SignInError {
    fn from(e: StoreError) -> Self {
        SignInError::Store(e)
    }
}

/// Exchanges a one-time code, verifies its ID token, and records the user, the grant and a new
/// session in one store transaction; writes the `sign_in` audit row (actor `session`, outcome
/// `ok` or `needs_consent`). Every attempt is counted in the metrics with its outcome.
pub async fn sign_in(app: &App, request: SignInRequest<'_>) -> Result<SignedIn, SignInError> {
    let (record, session) = sessions::fresh(app);
    let result = exchange_and_record(app, &request, record).await;
    let outcome = result.as_ref().map_or_else(SignInError::code, |_| "ok");
    app.metrics().sign_in(outcome, request.platform.as_str());
    let outcome = result?;
    let grant = &outcome.grant;
    let detail = format!("{} {}", request.platform.as_str(), grant.scopes);
    let result = if grant.needs_consent() {
        "needs_consent"
    } else {
        "ok"
    };
    let sub = &outcome.user.profile.sub;
    app.audit()
        .record("session", Some(sub), "sign_in", detail, result)
        .await;
    Ok(SignedIn {
        user: outcome.user,
        grant: outcome.grant,
        created: outcome.created,
        session,
    })
}

async fn exchange_and_record(
    app: &App,
    request: &SignInRequest<'_>,
    session: SessionRecord,
) -> Result<SignInOutcome, SignInError> {
    let settings = app.settings();
    let redirect_uri = match request.platform {
        Platform::Web => settings.web_redirect_uri.as_str(),
        Platform::Android | Platform::Ios => settings.mobile_redirect_uri.as_str(),
    };
    // A code is spent by its exchange: a vault that cannot seal what it brings refuses
    // before, so that the client may simply try again.
    app.vault_handle().sealer().map_err(SignInError::Vault)?;
    let tokens = app
        .provider()
        .exchange_code(request.code, redirect_uri)
        .await
        .map_err(SignInError::Exchange)?;
    let Some(id_token) = tokens.id_token.as_ref() else {
        if request.expected_sub.is_some() {
            // The expected user signed in here with an identity scope, which an incremental
            // code of theirs carries again: this is another account, one that never signed in
            // here.
            drop_tokens_of_another_account(app, None, tokens.refresh_token.as_ref()).await;
            return Err(SignInError::AnotherAccount);
        }
        return Err(SignInError::NoIdentityScope);
    };
    let claims = app
        .provider()
        .verify_id_token(id_token)
        .await
        .map_err(SignInError::IdToken)?;
    if let Some(expected) = request.expected_sub
        && expected != claims.sub
    {
        // A blocked account is refused as such, before it is told apart from the one asked.
        refuse_blocked(app, &claims.sub).await?;
        drop_tokens_of_another_account(app, Some(&claims.sub), tokens.refresh_token.as_ref()).await;
        return Err(SignInError::AnotherAccount);
    }
    let profile = claims.profile();
    let session = SessionRecord {
        sub: profile.sub.clone(),
        ..session
    };
    let outcome = record(app, &tokens, &profile, session).await?;
    // A cached token of another instance's making, or of a revoked grant, is stale now.
    app.broker().forget(&outcome.user.profile.sub);
    tracing::info!(
        sub = %outcome.user.profile.sub,
        platform = ?request.platform,
        created = outcome.created,
        refresh_token_received = tokens.refresh_token.is_some(),
        state = %outcome.grant.state,
        "signed in"
    );
    Ok(outcome)
}

/// Seals the tokens and writes the sign-in with its session, unless the account is blocked
/// ([`crate::ops::security_events`]): the block is read in the transaction of the writes.
/// A rotation that made another key active since this process read its keyring is met once:
/// read it again, seal anew, write again.
async fn record(
    app: &App,
    tokens: &TokenResponse,
    profile: &UserProfile,
    session: SessionRecord,
) -> Result<SignInOutcome, SignInError> {
    let mut vault = app.vault();
    let mut refused = false;
    loop {
        let sign_in = sealed_sign_in(app, &vault, tokens, profile, session.clone())?;
        match app.store().record_sign_in_unless_blocked(sign_in).await {
            Ok(SignInRecorded::Recorded(outcome)) => return Ok(outcome),
            Ok(SignInRecorded::Blocked(block)) => return Err(blocked(&block)),
            Err(StoreError::InactiveKey) if !refused => {
                refused = true;
                if let Some(key) = vault.active() {
                    app.vault_handle()
                        .reload_after_refusal(key)
                        .await
                        .map_err(SignInError::Vault)?;
                }
                vault = app.vault();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the store records of a sign-in, its tokens sealed under `vault`.
fn sealed_sign_in(
    app: &App,
    vault: &Vault,
    tokens: &TokenResponse,
    profile: &UserProfile,
    session: SessionRecord,
) -> Result<SignIn, SignInError> {
    let refresh_token = match &tokens.refresh_token {
        Some(rt) => Some(SealedRefreshToken {
            sealed: vault
                .seal_secret(rt, Aad::refresh_token(&profile.sub))
                .map_err(SignInError::Vault)?,
            fingerprint: grantkeeper_core::fingerprint(rt),
        }),
        None => None,
    };
    let expires_at = tokens.received_at + time::Duration::seconds(tokens.expires_in.max(0));
    let access_token = SealedAccessToken {
        sealed: vault
            .seal_secret(&tokens.access_token, Aad::access_token(&profile.sub))
            .map_err(SignInError::Vault)?,
        expires_at,
    };
    Ok(SignIn {
        profile: profile.clone(),
        granted_scopes: tokens.scope.clone(),
        refresh_token,
        access_token: Some(access_token),
        at: app.clock().now(),
        session: Some(session),
    })
}

/// Refuses the sign-in of an account Google disabled as hijacked, until it is enabled again
/// ([`crate::ops::security_events`]). Called once the ID token is verified, before anything is
/// written; a sign-in that writes reads the block in its own transaction instead ([`record`]).
async fn refuse_blocked(app: &App, sub: &str) -> Result<(), SignInError> {
    match app.store().sign_in_block(sub).await? {
        None => Ok(()),
        Some(block) => Err(blocked(&block)),
    }
}

fn blocked(block: &SignInBlock) -> SignInError {
    tracing::info!(sub = %block.sub, reason = %block.reason, "sign-in refused: the account is blocked");
    SignInError::Blocked
}

/// A code for the wrong account was exchanged all the same (a code is spent by its exchange):
/// its refresh token is not kept. When no grant of that account is held here (`sub` None: an
/// account that never signed in here), it is revoked at Google, so that the account's next
/// sign-in is a first consent again; when one is held, revoking would end that grant too
/// (Google revokes whole grants), so the token is only dropped.
async fn drop_tokens_of_another_account(
    app: &App,
    sub: Option<&str>,
    refresh_token: Option<&SecretString>,
) {
    let Some(refresh_token) = refresh_token else {
        return;
    };
    let held = match sub {
        None => Ok(false),
        Some(sub) => app
            .store()
            .grant(sub)
            .await
            .map(|grant| grant.is_some_and(|g| g.refresh_token.is_some())),
    };
    // Unknown: leave Google's grant alone rather than risk one that is held.
    let held = held.unwrap_or(true);
    let sub = sub.unwrap_or("(not identified)");
    if held {
        tracing::info!(%sub, "a code for another account was refused; its grant is held here, so its new token is only dropped");
        return;
    }
    match app.provider().revoke(refresh_token).await {
        Ok(()) => {
            tracing::info!(%sub, "a code for another account was refused and its grant revoked at Google")
        }
        Err(e) => {
            tracing::warn!(%sub, error = %e, "a code for another account was refused; its grant could not be revoked at Google")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!("ios".parse::<Platform>().unwrap(), Platform::Ios);
        let unknown = "desktop-".repeat(10).parse::<Platform>().unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "platform must be web, android or ios, not \"desktop-desktop-desk\""
        );
    }
}
