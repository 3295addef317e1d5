//! Sign-in: a one-time code in, a verified user with a sealed refresh token out.
//!
//! exchange (redirect URI by platform) -> verify the ID token -> seal -> one store
//! transaction -> answer. Nothing is written before the ID token is verified, and the refresh
//! token is committed before the caller hears of success.

use crate::app::App;
use crate::error::{ApiError, exchange_error, id_token_error, vault_error};
use grantkeeper_core::{Aad, SecretString, UserProfile, Vault};
use grantkeeper_provider::TokenResponse;
use grantkeeper_store::{
    SealedAccessToken, SealedRefreshToken, SessionRecord, SignIn, SignInOutcome, StoreError,
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

impl FromStr for Platform {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "web" => Ok(Platform::Web),
            "android" => Ok(Platform::Android),
            "ios" => Ok(Platform::Ios),
            other => Err(ApiError::InvalidRequest(format!(
                "platform must be web, android or ios, not {:?}",
                truncate(other, 20)
            ))),
        }
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
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

impl App {
    /// Exchanges a one-time code from `platform`, verifies its ID token, and records the user
    /// and grant. With `expected_sub` (incremental authorization for a signed-in user), a code
    /// of another account is refused with `forbidden` and nothing is recorded. Every sign-in
    /// is counted in the metrics with its outcome.
    pub async fn sign_in(
        &self,
        code: &SecretString,
        platform: Platform,
        expected_sub: Option<&str>,
    ) -> Result<SignInOutcome, ApiError> {
        self.sign_in_opening(code, platform, expected_sub, None)
            .await
    }

    /// [`App::sign_in`], opening a session for the user in the same store transaction;
    /// returns the outcome and the session's `Set-Cookie` value.
    pub async fn sign_in_with_session(
        &self,
        code: &SecretString,
        platform: Platform,
        expected_sub: Option<&str>,
    ) -> Result<(SignInOutcome, String), ApiError> {
        let (session, cookie) = self.new_session();
        let outcome = self
            .sign_in_opening(code, platform, expected_sub, Some(session))
            .await?;
        Ok((outcome, cookie))
    }

    async fn sign_in_opening(
        &self,
        code: &SecretString,
        platform: Platform,
        expected_sub: Option<&str>,
        session: Option<SessionRecord>,
    ) -> Result<SignInOutcome, ApiError> {
        let result = self
            .exchange_and_record(code, platform, expected_sub, session)
            .await;
        let outcome = result.as_ref().map_or_else(ApiError::code, |_| "ok");
        self.metrics().sign_in(outcome, platform.as_str());
        result
    }

    async fn exchange_and_record(
        &self,
        code: &SecretString,
        platform: Platform,
        expected_sub: Option<&str>,
        session: Option<SessionRecord>,
    ) -> Result<SignInOutcome, ApiError> {
        let settings = self.settings();
        let redirect_uri = match platform {
            Platform::Web => settings.web_redirect_uri.as_str(),
            Platform::Android | Platform::Ios => settings.mobile_redirect_uri.as_str(),
        };
        // A code is spent by its exchange: a vault that cannot seal what it brings refuses
        // before, so that the client may simply try again.
        self.vault_handle().sealer().map_err(vault_error)?;
        let tokens = self
            .provider()
            .exchange_code(code, redirect_uri)
            .await
            .map_err(exchange_error)?;
        let Some(id_token) = tokens.id_token.as_ref() else {
            if expected_sub.is_some() {
                // The expected user signed in here with an identity scope, which an
                // incremental code of theirs carries again: this is another account, one that
                // never signed in here.
                self.drop_tokens_of_another_account(None, tokens.refresh_token.as_ref())
                    .await;
                return Err(another_account());
            }
            return Err(ApiError::InvalidRequest(
                "the code carries no identity scope, so the user cannot be identified: \
                 request openid, email or profile with it"
                    .to_owned(),
            ));
        };
        let claims = self
            .provider()
            .verify_id_token(id_token)
            .await
            .map_err(id_token_error)?;
        self.refuse_blocked_sign_in(&claims.sub).await?;
        if let Some(expected) = expected_sub
            && expected != claims.sub
        {
            self.drop_tokens_of_another_account(Some(&claims.sub), tokens.refresh_token.as_ref())
                .await;
            return Err(another_account());
        }
        let profile = claims.profile();
        let session = session.map(|s| SessionRecord {
            sub: profile.sub.clone(),
            ..s
        });
        let mut vault = self.vault();
        let mut refused = false;
        let outcome = loop {
            let sign_in = self.sealed_sign_in(&vault, &tokens, &profile, session.clone())?;
            match self.store().record_sign_in(sign_in).await {
                Ok(outcome) => break outcome,
                // A rotation made another key active since this process read its keyring:
                // read it again, seal anew and write again, once.
                Err(StoreError::InactiveKey) if !refused => {
                    refused = true;
                    if let Some(key) = vault.active() {
                        self.vault_handle()
                            .reload_after_refusal(key)
                            .await
                            .map_err(vault_error)?;
                    }
                    vault = self.vault();
                }
                Err(e) => return Err(e.into()),
            }
        };
        // A cached token of another instance's making, or of a revoked grant, is stale now.
        self.broker().forget(&outcome.user.profile.sub);
        tracing::info!(
            sub = %outcome.user.profile.sub,
            ?platform,
            created = outcome.created,
            refresh_token_received = tokens.refresh_token.is_some(),
            state = %outcome.grant.state,
            "signed in"
        );
        Ok(outcome)
    }

    /// What the store records of a sign-in, its tokens sealed under `vault`.
    fn sealed_sign_in(
        &self,
        vault: &Vault,
        tokens: &TokenResponse,
        profile: &UserProfile,
        session: Option<SessionRecord>,
    ) -> Result<SignIn, ApiError> {
        let refresh_token = match &tokens.refresh_token {
            Some(rt) => Some(SealedRefreshToken {
                sealed: vault
                    .seal_secret(rt, Aad::refresh_token(&profile.sub))
                    .map_err(vault_error)?,
                fingerprint: grantkeeper_core::fingerprint(rt),
            }),
            None => None,
        };
        let expires_at = tokens.received_at + time::Duration::seconds(tokens.expires_in.max(0));
        let access_token = SealedAccessToken {
            sealed: vault
                .seal_secret(&tokens.access_token, Aad::access_token(&profile.sub))
                .map_err(vault_error)?,
            expires_at,
        };
        Ok(SignIn {
            profile: profile.clone(),
            granted_scopes: tokens.scope.clone(),
            refresh_token,
            access_token: Some(access_token),
            at: self.clock().now(),
            session,
        })
    }
}

/// The refusal of a code of another account than the expected one.
fn another_account() -> ApiError {
    ApiError::Forbidden(
        "the code is for another Google account than the one it was asked for; nothing was \
         changed: choose the signed-in account in Google's window"
            .to_owned(),
    )
}

impl App {
    /// A code for the wrong account was exchanged all the same (a code is spent by its
    /// exchange): its refresh token is not kept. When no grant of that account is held here
    /// (`sub` None: an account that never signed in here), it is revoked at Google, so that
    /// the account's next sign-in is a first consent again; when one is held, revoking would
    /// end that grant too (Google revokes whole grants), so the token is only dropped.
    async fn drop_tokens_of_another_account(
        &self,
        sub: Option<&str>,
        refresh_token: Option<&SecretString>,
    ) {
        let Some(refresh_token) = refresh_token else {
            return;
        };
        let held = match sub {
            None => Ok(false),
            Some(sub) => self
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
        match self.provider().revoke(refresh_token).await {
            Ok(()) => {
                tracing::info!(%sub, "a code for another account was refused and its grant revoked at Google")
            }
            Err(e) => {
                tracing::warn!(%sub, error = %e, "a code for another account was refused; its grant could not be revoked at Google")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!("ios".parse::<Platform>().unwrap(), Platform::Ios);
        assert!(matches!(
            "desktop".parse::<Platform>(),
            Err(ApiError::InvalidRequest(_))
        ));
    }
}
