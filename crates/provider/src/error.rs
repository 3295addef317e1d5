//! The provider boundary's errors, and the one place where an HTTP answer becomes one.
//!
//! The split follows what a caller must do (reference §2.7, §9): a dead grant (only
//! `invalid_grant`, and on a code `redirect_uri_mismatch` / `unauthorized_client`) is the
//! user's, `invalid_client` is the operator's, and rate limits, 5xx, 408, timeouts and the
//! transient error codes are retried later and never mark a grant revoked.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Longest text taken from an answer into an error message.
const MAX_ECHO: usize = 200;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A failed call to the provider. No variant ever holds a token, a code or a secret; the
/// descriptions are the provider's own `error_description`, capped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The code or refresh token is dead. `error` tells which OAuth error said so
    /// (`invalid_grant`, or for a code `redirect_uri_mismatch` / `unauthorized_client`).
    #[error("the provider rejected the grant ({error}): {description}")]
    InvalidGrant { error: String, description: String },
    /// Our client credentials are wrong: the operator must fix the configuration.
    #[error("the provider rejected grantkeeper's client credentials: {description}")]
    InvalidClient { description: String },
    /// The provider refused our request as malformed (e.g. `client_secret is missing.`).
    #[error("the provider refused the request: {description}")]
    InvalidRequest { description: String },
    /// 429, or 403 with a non-JSON body (Google's historic rate-limit answer).
    #[error("the provider is rate limiting grantkeeper{}", RetryNote(*retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, 408, timeouts, connection errors, `server_error`, `temporarily_unavailable`,
    /// `internal_failure`. `retry_after` is the provider's `Retry-After`, when it sent one.
    #[error("the provider is unavailable{}: {detail}{}", StatusNote(*status), RetryNote(*retry_after))]
    Unavailable {
        status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// An answer outside the protocol: not JSON, no `access_token`, an unexpected status.
    #[error("the provider answered outside the protocol: {detail}")]
    Protocol { detail: String },
}

impl ProviderError {
    /// True when trying again later may succeed; such errors never mean the grant is dead.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable { .. })
    }

    /// How long the provider asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The outcome label of this failure in metrics (one of
    /// [`grantkeeper_core::metrics::PROVIDER_OUTCOMES`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidGrant { .. } => "invalid_grant",
            Self::InvalidClient { .. } => "invalid_client",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Protocol { .. } => "error",
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        Self::Protocol {
            detail: detail.into(),
        }
    }
}

struct RetryNote(Option<Duration>);

impl fmt::Display for RetryNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, " (retry after {} s)", d.as_secs()),
            None => Ok(()),
        }
    }
}

struct StatusNote(Option<u16>);

impl fmt::Display for StatusNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (HTTP {s})"),
            None => Ok(()),
        }
    }
}

/// Why an ID token was refused. Only [`IdTokenError::KeysUnavailable`] is worth retrying;
/// every other cause is a property of the token itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token is signed with an unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("the ID token is signed by a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token comes from another issuer")]
    WrongIssuer,
    #[error("the ID token is meant for another audience")]
    WrongAudience,
    #[error("the ID token was obtained by a client that is not an authorized party")]
    UnauthorizedParty,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future")]
    IssuedInFuture,
    #[error("the ID token's lifetime is longer than allowed")]
    LifetimeTooLong,
    #[error("the ID token names no subject")]
    MissingSubject,
    #[error("the provider's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl IdTokenError {
    /// True when the same token may verify later (the keys could not be fetched).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::KeysUnavailable(_))
    }

    /// The outcome label of this failure in metrics (one of
    /// [`grantkeeper_core::metrics::VERIFY_OUTCOMES`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::UnauthorizedParty => "unauthorized_party",
            Self::Expired => "expired",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::MissingSubject => "missing_subject",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// Which call an answer belongs to: the same OAuth error means different things on a code
/// than on a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Code,
    Refresh,
    Revoke,
    Discovery,
    Jwks,
}

impl Call {
    /// The call's name in logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Call::Code => "code_exchange",
            Call::Refresh => "refresh",
            Call::Revoke => "revoke",
            Call::Discovery => "discovery",
            Call::Jwks => "jwks",
        }
    }
}

/// The OAuth error body, RFC 6749 §5.2.
#[derive(Debug, Deserialize)]
pub(crate) struct OAuthError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

impl OAuthError {
    /// Reads an OAuth error body; `None` for anything else (HTML, garbage, Google API errors
    /// whose `error` is an object).
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Probe {
            error: Option<serde_json::Value>,
            #[serde(default)]
            error_description: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(body).ok()?;
        let error = probe.error?.as_str()?.to_owned();
        let error_description = probe
            .error_description
            .and_then(|d| d.as_str().map(str::to_owned));
        Some(Self {
            error,
            error_description,
        })
    }

    fn description(&self) -> String {
        echo(self.error_description.as_deref().unwrap_or(""))
    }

    /// The description, prefixed by the error code when the variant does not already say it.
    fn labelled(&self, natural: &str) -> String {
        let description = self.description();
        if self.error == natural {
            description
        } else if description.is_empty() {
            echo(&self.error)
        } else {
            format!("{}: {description}", echo(&self.error))
        }
    }

    fn is_transient_code(&self) -> bool {
        const TRANSIENT: [&str; 3] = [
            "server_error",
            "temporarily_unavailable",
            "internal_failure",
        ];
        // Google's Python library looks at both fields; so do we.
        TRANSIENT.contains(&self.error.as_str())
            || self
                .error_description
                .as_deref()
                .is_some_and(|d| TRANSIENT.contains(&d))
    }
}

/// Turns a failed answer (a non-2xx status, or a 2xx whose body carries `error`) into an
/// error. `body` is only inspected, never echoed: answers of the token endpoint hold tokens.
pub(crate) fn classify(
    call: Call,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let oauth = OAuthError::parse(body);
    if status == 429 {
        return ProviderError::RateLimited { retry_after };
    }
    if status == 408 || status >= 500 {
        let detail = match &oauth {
            Some(e) => e.labelled(""),
            None => format!("HTTP {status}"),
        };
        return ProviderError::Unavailable {
            status: Some(status),
            detail,
            retry_after,
        };
    }
    if let Some(e) = oauth {
        return classify_oauth(call, status, retry_after, &e);
    }
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    if status == 403 && !is_json {
        return ProviderError::RateLimited { retry_after };
    }
    if (300..400).contains(&status) {
        return ProviderError::protocol(format!("unexpected redirect (HTTP {status})"));
    }
    ProviderError::protocol(format!(
        "HTTP {status} with {} instead of an OAuth error",
        describe_body(body)
    ))
}

fn classify_oauth(
    call: Call,
    status: u16,
    retry_after: Option<Duration>,
    e: &OAuthError,
) -> ProviderError {
    if e.is_transient_code() {
        return ProviderError::Unavailable {
            status: Some(status),
            detail: e.labelled(""),
            retry_after,
        };
    }
    match (e.error.as_str(), call) {
        ("invalid_grant", _) | ("redirect_uri_mismatch" | "unauthorized_client", Call::Code) => {
            ProviderError::InvalidGrant {
                error: echo(&e.error),
                description: e.description(),
            }
        }
        // On a refresh token, unauthorized_client means the token belongs to another client:
        // our configuration changed, which is the operator's to fix, not a revocation.
        ("invalid_client" | "unauthorized_client", _) => ProviderError::InvalidClient {
            description: e.labelled("invalid_client"),
        },
        ("rate_limit_exceeded" | "slow_down", _) => ProviderError::RateLimited { retry_after },
        _ => ProviderError::InvalidRequest {
            description: e.labelled("invalid_request"),
        },
    }
}

/// A body summarised without its content.
pub(crate) fn describe_body(body: &[u8]) -> String {
    if body.is_empty() {
        return "an empty body".to_owned();
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return format!("a JSON body of {} bytes", body.len());
    }
    let head = body.get(..64).unwrap_or(body);
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    if head.trim_start().starts_with('<') {
        format!("an HTML body of {} bytes", body.len())
    } else {
        format!("a non-JSON body of {} bytes", body.len())
    }
}

/// Text from the provider, capped and stripped of control characters, fit for a message.
pub(crate) fn echo(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ECHO)
        .collect();
    if text.chars().count() > MAX_ECHO {
        out.push('…');
    }
    out
}

/// `Retry-After` in seconds (the HTTP-date form is not used by token endpoints).
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(error: &str, description: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": error, "error_description": description}))
            .unwrap()
    }

    #[test]
    fn only_invalid_grant_kills_a_refresh_token() {
        let e = classify(
            Call::Refresh,
            400,
            None,
            &oauth("invalid_grant", "Token has been expired or revoked."),
        );
        assert_eq!(
            e,
            ProviderError::InvalidGrant {
                error: "invalid_grant".into(),
                description: "Token has been expired or revoked.".into()
            }
        );
        assert!(!e.is_transient());

        let e = classify(
            Call::Refresh,
            400,
            None,
            &oauth("unauthorized_client", "Unauthorized"),
        );
        assert!(
            matches!(e, ProviderError::InvalidClient { ref description } if description == "unauthorized_client: Unauthorized"),
            "{e:?}"
        );
        let e = classify(
            Call::Refresh,
            400,
            None,
            &oauth("redirect_uri_mismatch", "Bad Request"),
        );
        assert!(matches!(e, ProviderError::InvalidRequest { .. }), "{e:?}");
    }

    #[test]
    fn a_code_dies_of_redirect_mismatch_and_unauthorized_client_too() {
        for code in [
            "invalid_grant",
            "redirect_uri_mismatch",
            "unauthorized_client",
        ] {
            let e = classify(Call::Code, 400, None, &oauth(code, "Bad Request"));
            assert_eq!(
                e,
                ProviderError::InvalidGrant {
                    error: code.into(),
                    description: "Bad Request".into()
                }
            );
        }
    }

    #[test]
    fn invalid_client_is_the_operators() {
        let e = classify(
            Call::Code,
            401,
            None,
            &oauth("invalid_client", "The OAuth client was not found."),
        );
        assert_eq!(
            e,
            ProviderError::InvalidClient {
                description: "The OAuth client was not found.".into()
            }
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn invalid_request_keeps_googles_words() {
        let e = classify(
            Call::Code,
            400,
            None,
            &oauth("invalid_request", "client_secret is missing."),
        );
        assert_eq!(
            e,
            ProviderError::InvalidRequest {
                description: "client_secret is missing.".into()
            }
        );
        let e = classify(Call::Refresh, 400, None, &oauth("invalid_scope", ""));
        assert_eq!(
            e,
            ProviderError::InvalidRequest {
                description: "invalid_scope".into()
            }
        );
    }

    #[test]
    fn transient_by_status() {
        let e = classify(
            Call::Refresh,
            429,
            Some(Duration::from_secs(7)),
            &oauth("rate_limit_exceeded", "Rate Limit Exceeded"),
        );
        assert_eq!(
            e,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

        for status in [500, 502, 503, 504, 408] {
            let e = classify(
                Call::Refresh,
                status,
                Some(Duration::from_secs(3)),
                b"<html>oops</html>",
            );
            assert!(
                matches!(e, ProviderError::Unavailable { status: Some(s), .. } if s == status),
                "{e:?}"
            );
            assert!(e.is_transient());
            assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        }
        // A 5xx is transient whatever its body says.
        let e = classify(Call::Refresh, 503, None, &oauth("invalid_grant", "x"));
        assert!(e.is_transient());
    }

    #[test]
    fn transient_by_error_code() {
        for code in [
            "server_error",
            "temporarily_unavailable",
            "internal_failure",
        ] {
            let e = classify(Call::Refresh, 400, None, &oauth(code, "try later"));
            assert!(e.is_transient(), "{code}: {e:?}");
        }
        let e = classify(
            Call::Refresh,
            400,
            None,
            &oauth("invalid_request", "internal_failure"),
        );
        assert!(e.is_transient(), "{e:?}");
    }

    #[test]
    fn forbidden_html_is_a_rate_limit_but_forbidden_json_is_not() {
        let e = classify(
            Call::Refresh,
            403,
            None,
            b"<!DOCTYPE html><html><body>Forbidden</body></html>",
        );
        assert_eq!(e, ProviderError::RateLimited { retry_after: None });
        let e = classify(Call::Refresh, 403, None, br#"{"error":{"code":403}}"#);
        assert!(matches!(e, ProviderError::Protocol { .. }), "{e:?}");
        let e = classify(Call::Refresh, 403, None, &oauth("access_denied", "no"));
        assert!(matches!(e, ProviderError::InvalidRequest { .. }), "{e:?}");
    }

    #[test]
    fn garbage_and_redirects_are_protocol_errors_that_do_not_echo_the_body() {
        let body = b"ya29.secret-looking-garbage";
        let e = classify(Call::Code, 400, None, body);
        let shown = format!("{e} {e:?}");
        assert!(matches!(e, ProviderError::Protocol { .. }));
        assert!(!shown.contains("ya29"), "{shown}");
        assert!(shown.contains("27 bytes"), "{shown}");

        let e = classify(Call::Code, 302, None, b"");
        assert!(
            matches!(e, ProviderError::Protocol { ref detail } if detail.contains("redirect")),
            "{e:?}"
        );
    }

    #[test]
    fn descriptions_are_capped_and_cleaned() {
        let long = "x".repeat(1000);
        let e = classify(Call::Code, 400, None, &oauth("invalid_grant", &long));
        let ProviderError::InvalidGrant { description, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(description.chars().count(), MAX_ECHO + 1);
        assert_eq!(echo("a\nb\u{7}c"), "a b c");
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after(Some(" 12 ")),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
        assert_eq!(parse_retry_after(Some("99999999")), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn messages_read_well() {
        let e = ProviderError::Unavailable {
            status: Some(503),
            detail: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            e.to_string(),
            "the provider is unavailable (HTTP 503): HTTP 503 (retry after 5 s)"
        );
        assert_eq!(
            ProviderError::RateLimited { retry_after: None }.to_string(),
            "the provider is rate limiting grantkeeper"
        );
        assert!(IdTokenError::KeysUnavailable("x".into()).is_transient());
        assert!(!IdTokenError::Expired.is_transient());
    }
}
