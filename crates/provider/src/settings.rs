//! What grantkeeper needs to know about its provider and its OAuth client.

use grantkeeper_core::SecretString;
use std::time::Duration;
use url::Url;

/// Clock skew allowed on `exp` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The most skew we ever allow, whatever is configured (Google's own libraries use 300 s).
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// How often an ID token with an unknown `kid` may make us refetch the JWKS.
pub const DEFAULT_JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(60);
/// Longest `exp - iat` accepted (Google issues 3600 s; Node's library caps at a day).
pub const DEFAULT_MAX_ID_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

const GOOGLE_ISSUER_HOST: &str = "accounts.google.com";

/// Settings of the provider client. `Debug` redacts the client secret.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// Discovery lives at `{issuer}/.well-known/openid-configuration`; the issuer may carry a
    /// path (the emulator mounted at `/_google`).
    pub issuer: Url,
    /// The web (server) client: the one that exchanges codes and the `aud` of every ID token.
    pub client_id: String,
    pub client_secret: SecretString,
    /// Android and iOS client ids accepted as `azp` besides `client_id`.
    pub authorized_parties: Vec<String>,
    /// Accept `iss` both as the issuer URL and as the issuer without its scheme (Google still
    /// issues `accounts.google.com`).
    pub google_quirks: bool,
    /// Clock skew allowed on `exp` and `iat`; anything above [`MAX_LEEWAY`] counts as it.
    pub leeway: Duration,
    /// Least time between two JWKS refetches caused by unknown `kid`s.
    pub jwks_refetch_cooldown: Duration,
    /// ID tokens with a longer `exp - iat` are rejected.
    pub max_id_token_lifetime: Duration,
}

impl ProviderSettings {
    /// Settings with the defaults; Google's quirks are on when the issuer is Google's.
    pub fn new(issuer: Url, client_id: String, client_secret: SecretString) -> Self {
        let google_quirks = issuer.host_str() == Some(GOOGLE_ISSUER_HOST);
        Self {
            issuer,
            client_id,
            client_secret,
            authorized_parties: Vec::new(),
            google_quirks,
            leeway: DEFAULT_LEEWAY,
            jwks_refetch_cooldown: DEFAULT_JWKS_REFETCH_COOLDOWN,
            max_id_token_lifetime: DEFAULT_MAX_ID_TOKEN_LIFETIME,
        }
    }

    /// The leeway actually applied.
    pub(crate) fn effective_leeway(&self) -> Duration {
        self.leeway.min(MAX_LEEWAY)
    }

    /// `{issuer}/.well-known/openid-configuration`, keeping any path the issuer has
    /// (`Url::join` would replace its last segment instead).
    pub(crate) fn discovery_url(&self) -> Result<Url, String> {
        let mut url = self.issuer.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| format!("issuer {} cannot carry a path", self.issuer))?
            .pop_if_empty()
            .extend([".well-known", "openid-configuration"]);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(issuer: &str) -> ProviderSettings {
        ProviderSettings::new(
            Url::parse(issuer).unwrap(),
            "web".to_owned(),
            SecretString::from("s3cr3t-value"),
        )
    }

    #[test]
    fn discovery_url_keeps_the_issuer_path() {
        let cases = [
            (
                "https://accounts.google.com",
                "https://accounts.google.com/.well-known/openid-configuration",
            ),
            (
                "http://127.0.0.1:8080/_google",
                "http://127.0.0.1:8080/_google/.well-known/openid-configuration",
            ),
            (
                "http://127.0.0.1:8080/_google/",
                "http://127.0.0.1:8080/_google/.well-known/openid-configuration",
            ),
            (
                "http://127.0.0.1:8080/a/b?x=1#f",
                "http://127.0.0.1:8080/a/b/.well-known/openid-configuration",
            ),
        ];
        for (issuer, want) in cases {
            assert_eq!(settings(issuer).discovery_url().unwrap().as_str(), want);
        }
    }

    #[test]
    fn defaults_and_quirks() {
        let google = settings("https://accounts.google.com");
        assert!(google.google_quirks);
        assert_eq!(google.leeway, DEFAULT_LEEWAY);
        assert_eq!(google.jwks_refetch_cooldown, Duration::from_secs(60));
        assert_eq!(google.max_id_token_lifetime, Duration::from_secs(86_400));
        assert!(!settings("http://127.0.0.1:9/_google").google_quirks);

        let mut wide = settings("http://127.0.0.1:9");
        wide.leeway = Duration::from_secs(3600);
        assert_eq!(wide.effective_leeway(), MAX_LEEWAY);
    }

    #[test]
    fn debug_redacts_the_client_secret() {
        let shown = format!("{:?}", settings("https://accounts.google.com"));
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("web"));
    }
}
