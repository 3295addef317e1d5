//! The token endpoint's success answer (reference §2.5, §2.6).

use crate::error::{Call, ProviderError, classify, describe_body};
use grantkeeper_core::{Scopes, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;

/// What the token endpoint granted. `Debug` shows no token.
#[derive(Clone, Debug)]
pub struct TokenResponse {
    pub access_token: SecretString,
    /// Seconds the access token stays valid from [`TokenResponse::received_at`].
    pub expires_in: i64,
    /// Present on a first offline consent only; Google never rotates it on refresh.
    pub refresh_token: Option<SecretString>,
    /// The scopes actually granted, normalised (the request's list is not the truth).
    pub scope: Scopes,
    /// Present when an identity scope was granted. Not verified: pass it to
    /// [`crate::Provider::verify_id_token`].
    pub id_token: Option<SecretString>,
    pub token_type: String,
    /// When the request was sent, so that `received_at + expires_in` never overshoots the
    /// real expiry.
    pub received_at: OffsetDateTime,
}

impl TokenResponse {
    /// When the access token stops working.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.received_at + time::Duration::seconds(self.expires_in)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Seconds {
    fn value(&self) -> Option<i64> {
        match self {
            Seconds::Int(i) => Some(*i),
            #[allow(clippy::cast_possible_truncation)] // whole seconds are all we need
            Seconds::Float(f) if f.is_finite() => Some(f.trunc() as i64),
            Seconds::Float(_) => None,
            Seconds::Text(t) => t.trim().parse().ok(),
        }
    }
}

/// Every field optional, so that a missing one is reported by name instead of through serde's
/// message (which may quote a value, i.e. a token).
#[derive(Deserialize)]
struct Body {
    access_token: Option<String>,
    expires_in: Option<Seconds>,
    refresh_token: Option<String>,
    scope: Option<String>,
    id_token: Option<String>,
    token_type: Option<String>,
    error: Option<serde_json::Value>,
}

fn non_empty(s: Option<String>) -> Option<SecretString> {
    s.filter(|s| !s.is_empty()).map(SecretString::from)
}

/// Reads a 2xx answer of the token endpoint; a body carrying `error` is a failure, as Go's
/// library treats it.
pub(crate) fn parse_success(
    call: Call,
    status: u16,
    body: &[u8],
    received_at: OffsetDateTime,
) -> Result<TokenResponse, ProviderError> {
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return Err(ProviderError::protocol(format!(
            "token endpoint answered HTTP {status} with {}",
            describe_body(body)
        )));
    };
    if parsed.error.is_some() {
        return Err(classify(call, status, None, body));
    }
    let Some(access_token) = non_empty(parsed.access_token) else {
        return Err(ProviderError::protocol(
            "token endpoint answered without an access_token",
        ));
    };
    let Some(expires_in) = parsed.expires_in.as_ref().and_then(Seconds::value) else {
        return Err(ProviderError::protocol(
            "token endpoint answered without a numeric expires_in",
        ));
    };
    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_token: non_empty(parsed.refresh_token),
        scope: Scopes::parse(parsed.scope.as_deref().unwrap_or("")),
        id_token: non_empty(parsed.id_token),
        token_type: parsed.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::ExposeSecret;

    fn now() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)
    }

    #[test]
    fn a_full_answer() {
        let body = br#"{"access_token":"ya29.AAA","expires_in":3599,"refresh_token":"1//RRR",
            "scope":"openid email https://www.googleapis.com/auth/drive.appdata",
            "token_type":"Bearer","id_token":"a.b.c","unknown":1}"#;
        let t = parse_success(Call::Code, 200, body, now()).unwrap();
        assert_eq!(t.access_token.expose_secret(), "ya29.AAA");
        assert_eq!(t.refresh_token.as_ref().unwrap().expose_secret(), "1//RRR");
        assert_eq!(t.id_token.as_ref().unwrap().expose_secret(), "a.b.c");
        assert_eq!(t.expires_in, 3599);
        assert_eq!(t.expires_at(), now() + time::Duration::seconds(3599));
        assert!(t.scope.contains("email"));
        assert!(t.scope.contains(grantkeeper_core::scopes::DRIVE_APPDATA));
        let shown = format!("{t:?}");
        for secret in ["ya29.AAA", "1//RRR", "a.b.c"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_refresh_answer_has_no_refresh_token() {
        let body = br#"{"access_token":"ya29.B","expires_in":"3599","scope":"openid","token_type":"Bearer","refresh_token":""}"#;
        let t = parse_success(Call::Refresh, 200, body, now()).unwrap();
        assert!(t.refresh_token.is_none());
        assert!(t.id_token.is_none());
        assert_eq!(t.expires_in, 3599);
    }

    #[test]
    fn failures_inside_a_success() {
        let e = parse_success(
            Call::Refresh,
            200,
            br#"{"error":"invalid_grant","error_description":"Bad Request"}"#,
            now(),
        )
        .unwrap_err();
        assert!(matches!(e, ProviderError::InvalidGrant { .. }), "{e:?}");

        let e = parse_success(Call::Refresh, 200, br#"{"expires_in":3599}"#, now()).unwrap_err();
        assert!(
            matches!(e, ProviderError::Protocol { ref detail } if detail.contains("access_token"))
        );

        let e =
            parse_success(Call::Refresh, 200, br#"{"access_token":"ya29.C"}"#, now()).unwrap_err();
        assert!(
            matches!(e, ProviderError::Protocol { ref detail } if detail.contains("expires_in"))
        );
        assert!(!format!("{e:?}").contains("ya29"));

        // A wrongly typed field must not make serde quote the token back.
        let e = parse_success(
            Call::Refresh,
            200,
            br#"{"access_token":"ya29.D","expires_in":3599,"scope":["ya29.D"]}"#,
            now(),
        )
        .unwrap_err();
        assert!(!format!("{e} {e:?}").contains("ya29"), "{e:?}");

        let e = parse_success(Call::Refresh, 200, b"<html>ok</html>", now()).unwrap_err();
        assert!(
            matches!(e, ProviderError::Protocol { ref detail } if detail.contains("HTML")),
            "{e:?}"
        );
    }
}
