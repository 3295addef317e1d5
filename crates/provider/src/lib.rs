//! grantkeeper's client of the OpenID Connect provider (Google, or the emulator standing in
//! for it).
//!
//! Owns: discovery, the token endpoint (code exchange and refresh), revocation, the
//! classification of the provider's errors into what a caller can act on (dead grant,
//! operator mistake, transient), ID-token verification through a kid-indexed JWKS cache
//! that honours the provider's cache headers, and the verification of the security event
//! tokens of Cross-Account Protection ([`risc`]) through a cache of the same kind.
//!
//! Leaves to others: retries and backoff (the broker decides; a code is single use), storing
//! or sealing anything (the store and the vault), HTTP routes (the server), and the HTTP
//! client's timeouts and redirect policy (the caller builds the one shared
//! [`reqwest::Client`]). Time comes from the injected [`grantkeeper_core::Clock`]; nothing
//! here reads the system clock.
//!
//! Secrets (codes, tokens, the client secret) travel as [`SecretString`] and never reach an
//! error message, a log line or a `Debug` output.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod claims;
mod discovery;
mod error;
mod http;
mod jws;
mod keystore;
mod provider;
pub mod risc;
mod settings;
mod token;

pub use claims::IdTokenClaims;
pub use discovery::Discovery;
pub use error::{IdTokenError, ProviderError};
pub use keystore::KeyStoreStats;
pub use provider::Provider;
pub use risc::{SecurityEvent, SecurityEventError, SecurityEventVerifier};
pub use settings::ProviderSettings;
pub use token::TokenResponse;

pub use grantkeeper_core::SecretString;

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the fuzz targets under `fuzz/`: the header, signature and claim rules an
    //! ID token or a security event token goes through, with a fixed JWK set served from memory
    //! and a fixed clock instead of the network. Not part of the library's interface.

    use crate::claims::{ClaimRules, RawClaims, check_claims};
    use crate::discovery::trim_slash;
    use crate::jws::{decode_signed, parse_header};
    use crate::keystore::{JwksDocument, JwksSource, KeyStore, Lookup};
    use crate::risc::{RawSet, SetRules, check_set, read_header, signing_key, verify_signed};
    use crate::{
        IdTokenClaims, IdTokenError, ProviderError, ProviderSettings, SecurityEvent,
        SecurityEventError,
    };
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use grantkeeper_core::{Clock, SecretString, SharedClock};
    use serde::de::DeserializeOwned;
    use std::sync::Arc;
    use time::OffsetDateTime;

    /// The issuer of the ID tokens, as its discovery document names it.
    pub const ISSUER: &str = "https://accounts.google.com";
    /// The issuer of the security event tokens, as the RISC configuration names it.
    pub const RISC_ISSUER: &str = "https://accounts.google.com/";
    /// The web client: the audience of every ID token.
    pub const CLIENT_ID: &str = "fuzz-web.apps.googleusercontent.com";
    /// An authorized party besides the web client.
    pub const ANDROID_CLIENT_ID: &str = "fuzz-android.apps.googleusercontent.com";
    /// The Unix time every check runs at.
    pub const NOW: i64 = 1_750_000_000;

    fn secs(d: std::time::Duration) -> i64 {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
    }

    /// The payload of a compact JWS, read without looking at the signature.
    fn payload<T: DeserializeOwned>(token: &str) -> Option<T> {
        let payload = token.split('.').nth(1)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    #[derive(Debug)]
    struct FixedClock(i64);

    impl Clock for FixedClock {
        fn now(&self) -> OffsetDateTime {
            OffsetDateTime::from_unix_timestamp(self.0).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        }
    }

    /// A JWK set served from memory, fresh for Google's six hours.
    struct FixedJwks(Vec<u8>);

    impl JwksSource for FixedJwks {
        async fn fetch_jwks(&self) -> Result<JwksDocument, ProviderError> {
            Ok(JwksDocument {
                body: self.0.clone(),
                cache_control: Some("public, max-age=21600, must-revalidate".to_owned()),
                age: None,
            })
        }
    }

    /// Google's rules (quirks on, default leeway and lifetime, one authorized party) at
    /// [`NOW`], with one JWK set. Verification runs as [`crate::Provider::verify_id_token`]
    /// and [`crate::SecurityEventVerifier::verify`] do once discovery is in hand; each token
    /// meets a key cache of its own, so that no verification depends on the tokens before it.
    pub struct Verifier {
        jwks: FixedJwks,
        settings: ProviderSettings,
        clock: SharedClock,
        runtime: tokio::runtime::Runtime,
    }

    impl Verifier {
        /// `jwks` is the body of a JWKS answer.
        pub fn new(jwks: Vec<u8>) -> Result<Self, String> {
            let issuer = url::Url::parse(ISSUER).map_err(|e| e.to_string())?;
            let mut settings = ProviderSettings::new(
                issuer,
                CLIENT_ID.to_owned(),
                SecretString::from("fuzz-client-secret"),
            );
            settings.authorized_parties = vec![ANDROID_CLIENT_ID.to_owned()];
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Verifier {
                jwks: FixedJwks(jwks),
                settings,
                clock: Arc::new(FixedClock(NOW)),
                runtime,
            })
        }

        fn id_token_rules(&self) -> ClaimRules<'_> {
            let issuer = trim_slash(ISSUER);
            let s = &self.settings;
            ClaimRules {
                issuer,
                bare_issuer: s
                    .google_quirks
                    .then(|| issuer.split_once("://").map_or(issuer, |(_, rest)| rest)),
                client_id: &s.client_id,
                authorized_parties: &s.authorized_parties,
                leeway_secs: secs(s.effective_leeway()),
                max_lifetime_secs: secs(s.max_id_token_lifetime),
            }
        }

        fn lookup(&self, kid: &str) -> Lookup {
            let keys = KeyStore::new(self.clock.clone(), self.settings.jwks_refetch_cooldown);
            self.runtime.block_on(keys.key(kid, &self.jwks))
        }

        /// An ID token's header rules, then its claim rules on the payload as it stands: the
        /// checks a token meets once its signature verifies, reachable with made-up payloads.
        pub fn check_unverified_id_token(
            &self,
            token: &str,
        ) -> Result<IdTokenClaims, IdTokenError> {
            parse_header(token)?;
            let raw: RawClaims = payload(token).ok_or(IdTokenError::Malformed)?;
            check_claims(raw, &self.id_token_rules(), NOW)
        }

        pub fn verify_id_token(&self, token: &str) -> Result<IdTokenClaims, IdTokenError> {
            let header = parse_header(token)?;
            let key = match self.lookup(&header.kid) {
                Lookup::Key(key) => key,
                Lookup::Unknown => return Err(IdTokenError::UnknownKey),
                Lookup::Unavailable(e) => {
                    return Err(IdTokenError::KeysUnavailable(e.to_string()));
                }
            };
            let raw: RawClaims = decode_signed(token, &key)?;
            check_claims(raw, &self.id_token_rules(), NOW)
        }

        /// A security event token's header rules, then its claim rules on the payload as it
        /// stands.
        pub fn check_unverified_security_event(
            &self,
            token: &str,
        ) -> Result<SecurityEvent, SecurityEventError> {
            read_header(token)?;
            let raw: RawSet = payload(token)
                .ok_or_else(|| SecurityEventError::Parse("the payload is not JSON".to_owned()))?;
            check_set(raw, &SetRules::new(RISC_ISSUER, &self.settings), NOW)
        }

        pub fn verify_security_event(
            &self,
            token: &str,
        ) -> Result<SecurityEvent, SecurityEventError> {
            let header = read_header(token)?;
            let key = signing_key(self.lookup(&header.kid))?;
            let rules = SetRules::new(RISC_ISSUER, &self.settings);
            verify_signed(token, &key, &rules, NOW)
        }
    }
}
