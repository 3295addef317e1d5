//! The one mapping from failures to HTTP answers: the operations' errors
//! ([`crate::ops`]) and the HTTP layer's own refusals become [`ApiError`]s here.
//!
//! Every error body is `{"error": "<code>", "message": "<human text>"}` (design.md). Messages
//! are written for the client's developer and never carry internals: a store or provider
//! failure is logged here, once, inside the request span, and answered with a generic text.

use crate::ops::sign_in::UnknownPlatform;
use crate::ops::{EventError, KeyError, SessionError, SignInError, UserError};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use grantkeeper_provider::{IdTokenError, ProviderError};
use grantkeeper_store::StoreError;
use serde::Serialize;
use std::time::Duration;

/// An answer that is not a success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("this endpoint needs the X-Requested-With header")]
    Csrf,
    #[error("requests from this origin are not allowed")]
    OriginNotAllowed,
    #[error("{0}")]
    CodeRejected(String),
    #[error("{0}")]
    IdTokenInvalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    GrantRevoked(String),
    #[error("{0}")]
    ScopeNotGranted(String),
    /// A report of job items whose lease the caller no longer holds.
    #[error("{0}")]
    NotHeld(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Upstream(String),
    #[error("{message}")]
    UpstreamUnavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A failure of ours; the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// The contract's error body: a code for machines, a message for the client's developer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    #[schema(schema_with = error_code_schema)]
    error: &'static str,
    /// For people; never carries internals.
    message: String,
}

/// The codes of design.md, each answered by some [`ApiError`] (all of them but
/// `internal_error`, a failure of grantkeeper's own that no request can cause).
pub const CODES: [&str; 16] = [
    "invalid_request",
    "csrf",
    "origin_not_allowed",
    "code_rejected",
    "id_token_invalid",
    "unauthorized",
    "forbidden",
    "not_found",
    "grant_revoked",
    "not_held",
    "scope_not_granted",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
    "upstream_error",
    "upstream_unavailable",
];

fn error_code_schema() -> utoipa::openapi::Object {
    crate::http::openapi::string_enum(&CODES)
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::CodeRejected(_) => StatusCode::BAD_REQUEST,
            ApiError::Csrf | ApiError::OriginNotAllowed | ApiError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::ScopeNotGranted(_) => StatusCode::FORBIDDEN,
            ApiError::IdTokenInvalid(_) | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::GrantRevoked(_) | ApiError::NotHeld(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of design.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Csrf => "csrf",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::CodeRejected(_) => "code_rejected",
            ApiError::IdTokenInvalid(_) => "id_token_invalid",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::GrantRevoked(_) => "grant_revoked",
            ApiError::ScopeNotGranted(_) => "scope_not_granted",
            ApiError::NotHeld(_) => "not_held",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::UpstreamUnavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Internal(_) => "grantkeeper could not complete the request".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "request failed"),
            ApiError::Upstream(_) | ApiError::UpstreamUnavailable { .. } => {
                tracing::warn!(code = self.code(), message = %self, "upstream failure")
            }
            _ => tracing::debug!(code = self.code(), message = %self, "request refused"),
        }
        let retry_after = self.retry_after();
        let body = ErrorBody {
            error: self.code(),
            message: self.message(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("no such user".to_owned()),
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "store unavailable");
                ApiError::UpstreamUnavailable {
                    message: "the store is unavailable; try again".to_owned(),
                    retry_after: Some(Duration::from_secs(1)),
                }
            }
            // Still refused after reading the keyring again: a rotation under way elsewhere.
            StoreError::InactiveKey => keys_unavailable(),
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

/// The vault cannot seal now (its keyring could not be read again for too long, or the store
/// keeps naming another key): retryable, and nothing was asked of the provider.
pub fn keys_unavailable() -> ApiError {
    ApiError::UpstreamUnavailable {
        message: "grantkeeper cannot read its data keys right now; try again shortly".to_owned(),
        retry_after: Some(Duration::from_secs(5)),
    }
}

/// Maps a vault failure while sealing or opening.
pub fn vault_error(e: grantkeeper_core::VaultError) -> ApiError {
    match e {
        grantkeeper_core::VaultError::KeyringStale => {
            tracing::error!(
                "the data keys could not be read again for too long: sealing is paused"
            );
            keys_unavailable()
        }
        other => ApiError::Internal(format!("vault: {other}")),
    }
}

/// Maps a failed code exchange. Only the provider's verdict on the code is the client's
/// problem; everything else is upstream.
pub fn exchange_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::InvalidGrant { error, description } => ApiError::CodeRejected(format!(
            "the authorization code was rejected ({error}: {description}); it may be used, \
             expired, or issued for another client or platform: sign in again"
        )),
        // The provider client logged it, with what to do, and counted the warning.
        ProviderError::InvalidClient { .. } => ApiError::Upstream(
            "the identity provider rejected grantkeeper's client credentials".into(),
        ),
        ProviderError::InvalidRequest { description } => ApiError::Upstream(format!(
            "the identity provider refused the exchange: {description}"
        )),
        ProviderError::RateLimited { retry_after } => ApiError::UpstreamUnavailable {
            message: "the identity provider is rate limiting; try again shortly".into(),
            retry_after: retry_after.or(Some(Duration::from_secs(1))),
        },
        ProviderError::Unavailable { .. } => ApiError::UpstreamUnavailable {
            message: "the identity provider is unavailable; try again shortly".into(),
            retry_after: Some(Duration::from_secs(1)),
        },
        ProviderError::Protocol { detail } => ApiError::Upstream(format!(
            "the identity provider answered unexpectedly: {detail}"
        )),
    }
}

/// Maps a failed ID-token verification.
pub fn id_token_error(e: IdTokenError) -> ApiError {
    match e {
        IdTokenError::KeysUnavailable(detail) => {
            tracing::warn!(%detail, "provider signing keys unavailable");
            ApiError::UpstreamUnavailable {
                message: "the identity provider's signing keys are unavailable; try again shortly"
                    .into(),
                retry_after: Some(Duration::from_secs(1)),
            }
        }
        other => ApiError::IdTokenInvalid(format!("the ID token is not acceptable: {other}")),
    }
}

impl From<grantkeeper_broker::BrokerError> for ApiError {
    fn from(e: grantkeeper_broker::BrokerError) -> Self {
        use grantkeeper_broker::BrokerError as B;
        match e {
            B::UnknownUser => ApiError::NotFound("no user with this sub".to_owned()),
            B::ScopeNotGranted { missing } => ApiError::ScopeNotGranted(format!(
                "the user has not granted: {missing}; ask them to sign in and grant it"
            )),
            B::NeedsConsent => ApiError::GrantRevoked(
                "no refresh token is held for this user: they must sign in again with consent"
                    .to_owned(),
            ),
            B::Revoked { reason } => ApiError::GrantRevoked(format!(
                "the user's grant was revoked ({reason}): they must sign in again with consent"
            )),
            B::Unavailable { retry_after, .. } => ApiError::UpstreamUnavailable {
                message: "Google is unavailable for this grant right now; try again later"
                    .to_owned(),
                retry_after: Some(retry_after),
            },
            B::Misconfigured { detail } => {
                tracing::error!(%detail, "the provider refused grantkeeper's request: check the client credentials");
                ApiError::Upstream("the identity provider refused grantkeeper's request".to_owned())
            }
            B::Store(e) => e.into(),
            B::Vault(detail) => ApiError::Internal(format!("vault: {detail}")),
            B::KeysUnavailable => {
                tracing::error!(
                    "the data keys could not be read again for too long: sealing is paused"
                );
                keys_unavailable()
            }
        }
    }
}

impl From<grantkeeper_broker::jobs::JobError> for ApiError {
    fn from(e: grantkeeper_broker::jobs::JobError) -> Self {
        use grantkeeper_broker::jobs::JobError as J;
        match e {
            J::NotFound => ApiError::NotFound("no job with this id".to_owned()),
            J::Invalid(message) => ApiError::InvalidRequest(message),
            J::NotHeld => ApiError::NotHeld(
                "an item of this report is not held by this lease (its lease ran out, another \
                 worker holds it, or it is settled already): nothing was changed"
                    .to_owned(),
            ),
            J::Store(e) => e.into(),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::NoIdentityScope => ApiError::InvalidRequest(e.to_string()),
            SignInError::AnotherAccount | SignInError::Blocked => {
                ApiError::Forbidden(e.to_string())
            }
            SignInError::Exchange(e) => exchange_error(e),
            SignInError::IdToken(e) => id_token_error(e),
            SignInError::Vault(e) => vault_error(e),
            SignInError::Store(e) => e.into(),
        }
    }
}

impl From<UnknownPlatform> for ApiError {
    fn from(e: UnknownPlatform) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Ended => ApiError::Unauthorized(e.to_string()),
            SessionError::Store(e) => e.into(),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => ApiError::NotFound(e.to_string()),
            UserError::Revocation(e) => e.into(),
            UserError::Store(e) => e.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Unknown => ApiError::Unauthorized(e.to_string()),
            KeyError::LacksScope { .. } => ApiError::Forbidden(e.to_string()),
            KeyError::Store(e) => e.into(),
        }
    }
}

/// A security event's failure on our side (the provider delivers it again); a rejected token
/// is answered by the route with RFC 8935's body, and only mapped here for completeness.
impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Rejected(e) => ApiError::InvalidRequest(e.to_string()),
            EventError::KeysUnavailable => ApiError::UpstreamUnavailable {
                message: e.to_string(),
                retry_after: Some(Duration::from_secs(5)),
            },
            EventError::GrantBusy => ApiError::UpstreamUnavailable {
                message: e.to_string(),
                retry_after: Some(Duration::from_secs(1)),
            },
            EventError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_broker::BrokerError;
    use grantkeeper_core::{Scopes, VaultError};

    fn stores() -> Vec<StoreError> {
        vec![
            StoreError::NotFound,
            StoreError::Unavailable("down".into()),
            StoreError::InactiveKey,
            StoreError::Conflict,
            StoreError::Database("broken".into()),
        ]
    }

    fn brokers() -> Vec<BrokerError> {
        let mut all = vec![
            BrokerError::UnknownUser,
            BrokerError::ScopeNotGranted {
                missing: Scopes::parse("openid"),
            },
            BrokerError::NeedsConsent,
            BrokerError::Revoked { reason: "r".into() },
            BrokerError::Unavailable {
                retry_after: Duration::from_secs(3),
                detail: "d".into(),
            },
            BrokerError::Misconfigured { detail: "d".into() },
            BrokerError::Vault("v".into()),
            BrokerError::KeysUnavailable,
        ];
        all.extend(stores().into_iter().map(BrokerError::Store));
        all
    }

    fn sign_ins() -> Vec<SignInError> {
        let mut all = vec![
            SignInError::NoIdentityScope,
            SignInError::AnotherAccount,
            SignInError::Blocked,
            SignInError::Exchange(ProviderError::InvalidGrant {
                error: "invalid_grant".into(),
                description: "used".into(),
            }),
            SignInError::Exchange(ProviderError::InvalidClient {
                description: "d".into(),
            }),
            SignInError::Exchange(ProviderError::InvalidRequest {
                description: "d".into(),
            }),
            SignInError::Exchange(ProviderError::RateLimited { retry_after: None }),
            SignInError::Exchange(ProviderError::Unavailable {
                status: Some(503),
                detail: "d".into(),
                retry_after: None,
            }),
            SignInError::Exchange(ProviderError::Protocol { detail: "d".into() }),
            SignInError::IdToken(IdTokenError::KeysUnavailable("d".into())),
            SignInError::IdToken(IdTokenError::BadSignature),
            SignInError::Vault(VaultError::KeyringStale),
            SignInError::Vault(VaultError::Seal),
        ];
        all.extend(stores().into_iter().map(SignInError::Store));
        all
    }

    /// The error body's schema in the OpenAPI document lists [`CODES`]: every code answered.
    #[test]
    fn every_code_answered_is_in_the_document() {
        let all = [
            ApiError::InvalidRequest(String::new()),
            ApiError::Csrf,
            ApiError::OriginNotAllowed,
            ApiError::CodeRejected(String::new()),
            ApiError::IdTokenInvalid(String::new()),
            ApiError::Unauthorized(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::GrantRevoked(String::new()),
            ApiError::ScopeNotGranted(String::new()),
            ApiError::NotHeld(String::new()),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            ApiError::Upstream(String::new()),
            ApiError::UpstreamUnavailable {
                message: String::new(),
                retry_after: None,
            },
        ];
        let mut codes: Vec<&str> = all.iter().map(ApiError::code).collect();
        let mut listed = CODES.to_vec();
        codes.sort_unstable();
        listed.sort_unstable();
        assert_eq!(codes, listed);
        assert_eq!(ApiError::Internal(String::new()).code(), "internal_error");
    }

    /// The operations record an error's code (audit rows, metrics) before the HTTP layer maps
    /// it: both must name the same code of the contract.
    #[test]
    fn operations_and_answers_name_the_same_code() {
        for e in sign_ins() {
            let code = e.code();
            assert_eq!(ApiError::from(e).code(), code);
        }
        for e in brokers() {
            let code = crate::ops::broker_code(&e);
            assert_eq!(ApiError::from(e).code(), code);
        }
        let users = [UserError::NotFound]
            .into_iter()
            .chain(brokers().into_iter().map(UserError::Revocation))
            .chain(stores().into_iter().map(UserError::Store));
        for e in users {
            let code = e.code();
            assert_eq!(ApiError::from(e).code(), code);
        }
        let keys = [
            KeyError::Unknown,
            KeyError::LacksScope {
                key_id: "key_1".into(),
                needed: crate::apikeys::KeyScope::Token,
            },
        ]
        .into_iter()
        .chain(stores().into_iter().map(KeyError::Store));
        for e in keys {
            let code = e.code();
            assert_eq!(ApiError::from(e).code(), code);
        }
        let events = [EventError::KeysUnavailable, EventError::GrantBusy]
            .into_iter()
            .chain(stores().into_iter().map(EventError::Store));
        for e in events {
            let code = e.code();
            assert_eq!(Some(ApiError::from(e).code()), code);
        }
    }
}
