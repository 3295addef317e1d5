//! The provider's discovery document (OpenID Connect Discovery 1.0, reference §1.2).

use serde::{Deserialize, Serialize};
use url::Url;

/// The fields grantkeeper uses; unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    pub jwks_uri: Url,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

impl Discovery {
    /// The issuer as ID tokens spell it with a scheme, without a trailing slash.
    pub(crate) fn issuer_url_form(&self) -> &str {
        trim_slash(&self.issuer)
    }

    /// The issuer without its scheme (`accounts.google.com`), Google's second spelling.
    pub(crate) fn issuer_bare_form(&self) -> &str {
        let issuer = self.issuer_url_form();
        issuer.split_once("://").map_or(issuer, |(_, rest)| rest)
    }
}

/// Issuers are compared ignoring a single trailing slash (Google's RISC tokens add one).
pub(crate) fn trim_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

/// True when the discovery document speaks for the configured issuer (Discovery §4.3).
pub(crate) fn same_issuer(configured: &Url, published: &str) -> bool {
    trim_slash(configured.as_str()) == trim_slash(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(issuer: &str) -> Discovery {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
            "token_endpoint": "https://oauth2.googleapis.com/token",
            "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
            "response_types_supported": ["code"],
            "something_new": {"nested": true}
        }))
        .unwrap()
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_ones_default() {
        let d = doc("https://accounts.google.com");
        assert_eq!(d.revocation_endpoint, None);
        assert!(d.scopes_supported.is_empty());
    }

    #[test]
    fn issuer_spellings() {
        let d = doc("https://accounts.google.com");
        assert_eq!(d.issuer_url_form(), "https://accounts.google.com");
        assert_eq!(d.issuer_bare_form(), "accounts.google.com");
        let d = doc("http://127.0.0.1:8080/_google/");
        assert_eq!(d.issuer_url_form(), "http://127.0.0.1:8080/_google");
        assert_eq!(d.issuer_bare_form(), "127.0.0.1:8080/_google");
    }

    #[test]
    fn configured_issuer_matches_modulo_one_slash() {
        let google = Url::parse("https://accounts.google.com").unwrap();
        assert!(same_issuer(&google, "https://accounts.google.com"));
        assert!(same_issuer(&google, "https://accounts.google.com/"));
        assert!(!same_issuer(&google, "accounts.google.com"));
        let nested = Url::parse("http://127.0.0.1:8080/_google").unwrap();
        assert!(same_issuer(&nested, "http://127.0.0.1:8080/_google"));
        assert!(!same_issuer(&nested, "http://127.0.0.1:8080"));
    }
}
