//! The provider's signing keys, indexed by `kid` (reference §4.5, §4.6).
//!
//! Freshness follows the JWKS answer's `Cache-Control: max-age` minus `Age`. Past it, the
//! next lookup refetches; if that fails, the old keys keep verifying for a grace period so
//! that a short JWKS outage does not stop sign-in. A `kid` we do not hold makes us refetch
//! at once (a key rotated between two sign-ins is picked up by the second), but at most once
//! per cooldown, so that tokens with made-up `kid`s cannot turn us into a JWKS hammer.
//! One fetch runs at a time; callers that waited for it use its outcome instead of fetching
//! again.

use crate::error::ProviderError;
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_core::SharedClock;
use pkcs1::UintRef;
use pkcs1::der::Encode;
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One RSA key of a JWK set, parsed once per JWKS fetch into aws-lc-rs's form, which checks
/// an RS256 signature without rebuilding the key and its Montgomery context at every
/// verification (as `jsonwebtoken::crypto::verify` does).
pub(crate) struct JwksKey {
    rs256: ParsedPublicKey,
}

impl JwksKey {
    /// From the JWK's base64url `n` and `e`; None when they are not a usable RSA key
    /// (2048 to 8192 bits).
    fn from_rsa_components(n: &str, e: &str) -> Option<JwksKey> {
        let (n, e) = (
            URL_SAFE_NO_PAD.decode(n).ok()?,
            URL_SAFE_NO_PAD.decode(e).ok()?,
        );
        // aws-lc-rs reads an RSA verification key from the DER of a PKCS#1 `RSAPublicKey`.
        let der = pkcs1::RsaPublicKey {
            modulus: UintRef::new(&n).ok()?,
            public_exponent: UintRef::new(&e).ok()?,
        }
        .to_der()
        .ok()?;
        let rs256 = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).ok()?;
        Some(JwksKey { rs256 })
    }

    /// Whether `signature` is this key's RS256 (RSASSA-PKCS1-v1_5, SHA-256) signature of
    /// `message`.
    pub(crate) fn verifies_rs256(&self, message: &[u8], signature: &[u8]) -> bool {
        self.rs256.verify_sig(message, signature).is_ok()
    }
}

impl std::fmt::Debug for JwksKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKey").finish_non_exhaustive()
    }
}

/// Freshness when the JWKS answer names none.
const DEFAULT_MAX_AGE: i64 = 3600;
/// Longest freshness believed, whatever the headers say.
const MAX_MAX_AGE: i64 = 86_400;
/// How long stale keys keep verifying while refetches fail.
const STALE_GRACE: i64 = 86_400;

/// Where the JWK set comes from. The provider implements it over HTTP (discovery's
/// `jwks_uri`); the keystore only decides when to ask.
pub(crate) trait JwksSource: Send + Sync {
    fn fetch_jwks(&self) -> impl Future<Output = Result<JwksDocument, ProviderError>> + Send;
}

/// A JWKS answer as received: the body and the headers that say how long it stays fresh.
pub(crate) struct JwksDocument {
    pub body: Vec<u8>,
    pub cache_control: Option<String>,
    pub age: Option<String>,
}

/// Counters for readiness checks, metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyStoreStats {
    /// JWKS fetches attempted, successful or not.
    pub fetches: u64,
    /// Of those, the ones that failed.
    pub failed_fetches: u64,
    /// Signing keys held now.
    pub keys: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// Nothing held yet, or what is held is past its max-age.
    Expiry,
    /// A token names a `kid` the fresh set lacks.
    UnknownKid,
}

#[derive(Debug)]
enum Step {
    Hit(Arc<JwksKey>),
    /// The fresh set lacks the kid and no refetch is allowed now.
    Unknown,
    /// Usable keys are held (answer to a readiness check).
    Ready,
    Unavailable(ProviderError),
    Fetch(Reason),
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<JwksKey>>,
    loaded: bool,
    /// Unix seconds before which the set is fresh.
    fresh_until: i64,
    /// Unix seconds before which the set may still verify while refetches fail.
    usable_until: i64,
    fetches: u64,
    failed_fetches: u64,
    last_error: Option<ProviderError>,
    /// After a failed refetch with stale keys in hand, no new attempt before this.
    retry_not_before: i64,
    last_unknown_kid_fetch: Option<i64>,
}

impl State {
    fn step(&self, kid: Option<&str>, now: i64, cooldown: i64, may_fetch: bool) -> Step {
        let fresh = self.loaded && now < self.fresh_until;
        let usable = self.loaded && now < self.usable_until;
        let held = |kid: Option<&str>| match kid {
            None => Some(Step::Ready),
            Some(kid) => self.keys.get(kid).map(|k| Step::Hit(Arc::clone(k))),
        };
        if fresh {
            if let Some(found) = held(kid) {
                return found;
            }
            let cooled = self
                .last_unknown_kid_fetch
                .is_none_or(|at| now.saturating_sub(at) >= cooldown);
            return if may_fetch && cooled {
                Step::Fetch(Reason::UnknownKid)
            } else {
                Step::Unknown
            };
        }
        // Stale or empty: refetch, unless a refetch just failed and stale keys can carry on.
        let backing_off = usable && now < self.retry_not_before;
        if may_fetch && !backing_off {
            return Step::Fetch(Reason::Expiry);
        }
        if usable && let Some(found) = held(kid) {
            return found;
        }
        Step::Unavailable(
            self.last_error
                .clone()
                .unwrap_or_else(|| ProviderError::Unavailable {
                    status: None,
                    detail: "the signing keys are stale and could not be refreshed".to_owned(),
                    retry_after: None,
                }),
        )
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub(crate) enum Lookup {
    Key(Arc<JwksKey>),
    Unknown,
    Unavailable(ProviderError),
}

pub(crate) struct KeyStore {
    clock: SharedClock,
    cooldown: i64,
    state: Mutex<State>,
    /// Serialises fetches; never held together with `state` across an await.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyStore {
    pub(crate) fn new(clock: SharedClock, cooldown: Duration) -> Self {
        Self {
            clock,
            cooldown: i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX),
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State half-written: every update is a few plain stores.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> KeyStoreStats {
        let s = self.state();
        KeyStoreStats {
            fetches: s.fetches,
            failed_fetches: s.failed_fetches,
            keys: s.keys.len(),
        }
    }

    /// The key named `kid`, fetching the set when it is missing, stale or lacks the kid.
    pub(crate) async fn key(&self, kid: &str, source: &impl JwksSource) -> Lookup {
        match self.run(Some(kid), source).await {
            Step::Hit(key) => Lookup::Key(key),
            Step::Unknown | Step::Ready => Lookup::Unknown,
            Step::Unavailable(e) => Lookup::Unavailable(e),
            Step::Fetch(_) => Lookup::Unknown,
        }
    }

    /// Makes sure usable keys are held, fetching them if none are or they are past max-age.
    pub(crate) async fn ensure_loaded(
        &self,
        source: &impl JwksSource,
    ) -> Result<(), ProviderError> {
        match self.run(None, source).await {
            Step::Unavailable(e) => Err(e),
            _ => Ok(()),
        }
    }

    async fn run(&self, kid: Option<&str>, source: &impl JwksSource) -> Step {
        let (step, seen) = {
            let s = self.state();
            (
                s.step(kid, self.clock.unix(), self.cooldown, true),
                s.fetches,
            )
        };
        if !matches!(step, Step::Fetch(_)) {
            return step;
        }

        let _one_at_a_time = self.fetching.lock().await;
        let reason = {
            let s = self.state();
            let now = self.clock.unix();
            // Someone fetched while we waited: their outcome is ours.
            let may_fetch = s.fetches == seen;
            match s.step(kid, now, self.cooldown, may_fetch) {
                Step::Fetch(reason) => reason,
                other => return other,
            }
        };

        let fetched = source.fetch_jwks().await.and_then(|doc| {
            let keys = parse_jwks(&doc.body)?;
            let lifetime = freshness(doc.cache_control.as_deref(), doc.age.as_deref());
            Ok((keys, lifetime))
        });

        let now = self.clock.unix();
        let mut s = self.state();
        s.fetches += 1;
        if reason == Reason::UnknownKid {
            s.last_unknown_kid_fetch = Some(now);
        }
        match fetched {
            Ok((keys, lifetime)) => {
                tracing::debug!(keys = keys.len(), lifetime, ?reason, "fetched the JWKS");
                s.keys = keys;
                s.loaded = true;
                s.fresh_until = now.saturating_add(lifetime);
                s.usable_until = s.fresh_until.saturating_add(STALE_GRACE);
                s.last_error = None;
                s.retry_not_before = 0;
                s.step(kid, now, self.cooldown, false)
            }
            Err(e) => {
                tracing::warn!(error = %e, ?reason, "fetching the JWKS failed");
                s.failed_fetches += 1;
                s.retry_not_before = now.saturating_add(self.cooldown);
                s.last_error = Some(e.clone());
                match s.step(kid, now, self.cooldown, false) {
                    // We could not look for the kid; that is not proof it does not exist.
                    Step::Unknown => Step::Unavailable(e),
                    Step::Unavailable(_) => Step::Unavailable(e),
                    other => other,
                }
            }
        }
    }
}

/// One JWK, with only the members that matter to RS256 verification.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// The RSA signing keys of a JWK set. Keys of another type, use or algorithm, or without a
/// kid, are skipped rather than failing the set: a provider may publish more than we use.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<JwksKey>>, ProviderError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body)
        .map_err(|_| ProviderError::protocol("the JWKS is not a JSON object with a keys array"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let rsa = jwk.kty.as_deref() == Some("RSA");
        let signing = jwk.usage.as_deref().is_none_or(|u| u == "sig");
        let rs256 = jwk
            .alg
            .as_deref()
            .is_none_or(|a| a == crate::jws::ALGORITHM);
        let (Some(kid), Some(n), Some(e), true, true, true) =
            (jwk.kid, jwk.n, jwk.e, rsa, signing, rs256)
        else {
            continue;
        };
        match JwksKey::from_rsa_components(&n, &e) {
            Some(key) => {
                keys.insert(kid, Arc::new(key));
            }
            None => tracing::warn!(%kid, "skipping an unreadable JWKS key"),
        }
    }
    if keys.is_empty() {
        return Err(ProviderError::protocol("the JWKS holds no RSA signing key"));
    }
    Ok(keys)
}

/// Seconds the answer stays fresh: `max-age` minus `Age`, within [0, 24 h]; an hour when the
/// answer says nothing; nothing when it forbids caching.
pub(crate) fn freshness(cache_control: Option<&str>, age: Option<&str>) -> i64 {
    let mut max_age = None;
    let mut no_cache = false;
    for directive in cache_control.unwrap_or("").split(',') {
        let (name, value) = directive
            .split_once('=')
            .map_or((directive, None), |(n, v)| (n, Some(v)));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "max-age" => {
                max_age = value.and_then(|v| v.trim().trim_matches('"').parse::<i64>().ok());
            }
            "no-cache" | "no-store" => no_cache = true,
            _ => {}
        }
    }
    let age = age
        .and_then(|a| a.trim().parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let lifetime = match (no_cache, max_age) {
        (true, _) => 0,
        (false, Some(max_age)) => max_age.saturating_sub(age),
        (false, None) => DEFAULT_MAX_AGE.saturating_sub(age),
    };
    lifetime.clamp(0, MAX_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};

    /// A JWK built from a real key's `n` and `e` checks that key's RS256 signatures, and
    /// nothing else.
    #[test]
    fn a_jwks_key_checks_rs256_signatures_of_its_key() {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let (n, e) = (
            b64(public.modulus().big_endian_without_leading_zero()),
            b64(public.exponent().big_endian_without_leading_zero()),
        );
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": n, "e": e}
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        let key = &keys["k1"];
        let message = b"header.payload";
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        )
        .unwrap();
        assert!(key.verifies_rs256(message, &signature));
        assert!(!key.verifies_rs256(b"header.payloaD", &signature));
        // A modulus sent with a leading zero byte is the same key; padded base64url is not
        // a JWK's.
        let zero_led = [
            &[0u8][..],
            public.modulus().big_endian_without_leading_zero(),
        ]
        .concat();
        let same = JwksKey::from_rsa_components(&b64(&zero_led), &e).unwrap();
        assert!(same.verifies_rs256(message, &signature));
        assert!(JwksKey::from_rsa_components(&format!("{n}=="), &e).is_none());
        signature[10] ^= 1;
        assert!(!key.verifies_rs256(message, &signature));
    }

    #[test]
    fn freshness_follows_cache_control_and_age() {
        let google = "public, max-age=21600, must-revalidate, no-transform";
        assert_eq!(freshness(Some(google), None), 21_600);
        assert_eq!(freshness(Some(google), Some("600")), 21_000);
        assert_eq!(freshness(Some("Max-Age=\"120\""), Some(" 20 ")), 100);
        assert_eq!(freshness(Some("max-age=100"), Some("500")), 0);
        assert_eq!(freshness(Some("max-age=9999999"), None), MAX_MAX_AGE);
        assert_eq!(freshness(None, None), DEFAULT_MAX_AGE);
        assert_eq!(freshness(Some("public"), Some("60")), DEFAULT_MAX_AGE - 60);
        assert_eq!(freshness(Some("no-cache, max-age=600"), None), 0);
        assert_eq!(freshness(Some("no-store"), None), 0);
        assert_eq!(
            freshness(Some("max-age=abc"), Some("junk")),
            DEFAULT_MAX_AGE
        );
    }

    // Every key of the filter's sets shares one 2048-bit modulus.
    fn jwk(
        kty: &str,
        usage: Option<&str>,
        alg: Option<&str>,
        kid: Option<&str>,
    ) -> serde_json::Value {
        let mut v = serde_json::json!({"kty": kty, "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        if let Some(u) = usage {
            v["use"] = u.into();
        }
        if let Some(a) = alg {
            v["alg"] = a.into();
        }
        if let Some(k) = kid {
            v["kid"] = k.into();
        }
        v
    }

    #[test]
    fn only_rsa_signing_keys_with_a_kid_are_kept() {
        let body = serde_json::to_vec(&serde_json::json!({"keys": [
            jwk("RSA", Some("sig"), Some("RS256"), Some("good")),
            jwk("RSA", None, None, Some("plain")),
            jwk("RSA", Some("enc"), Some("RS256"), Some("enc")),
            jwk("RSA", Some("sig"), Some("RSA-OAEP"), Some("oaep")),
            jwk("EC", Some("sig"), Some("ES256"), Some("ec")),
            jwk("RSA", Some("sig"), Some("RS256"), None),
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
            "not even an object",
        ]}))
        .unwrap();
        let keys = parse_jwks(&body).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["good", "plain"]);
    }

    #[test]
    fn an_empty_or_garbled_set_is_an_error() {
        assert!(matches!(
            parse_jwks(br#"{"keys": []}"#),
            Err(ProviderError::Protocol { .. })
        ));
        assert!(matches!(
            parse_jwks(b"<html>"),
            Err(ProviderError::Protocol { .. })
        ));
        let only_ec = serde_json::to_vec(
            &serde_json::json!({"keys": [jwk("EC", Some("sig"), None, Some("ec"))]}),
        )
        .unwrap();
        assert!(parse_jwks(&only_ec).is_err());
    }

    fn loaded(now: i64) -> State {
        let body = serde_json::to_vec(
            &serde_json::json!({"keys": [jwk("RSA", Some("sig"), Some("RS256"), Some("k1"))]}),
        )
        .unwrap();
        State {
            keys: parse_jwks(&body).unwrap(),
            loaded: true,
            fresh_until: now + 100,
            usable_until: now + 100 + STALE_GRACE,
            fetches: 1,
            ..State::default()
        }
    }

    #[test]
    fn lookup_decisions() {
        let now = 1_000_000;
        let empty = State::default();
        assert!(matches!(
            empty.step(Some("k1"), now, 60, true),
            Step::Fetch(Reason::Expiry)
        ));
        assert!(matches!(
            empty.step(None, now, 60, false),
            Step::Unavailable(_)
        ));

        let mut s = loaded(now);
        assert!(matches!(s.step(Some("k1"), now, 60, true), Step::Hit(_)));
        assert!(matches!(s.step(None, now, 60, true), Step::Ready));
        // An unknown kid refetches at once, then not again within the cooldown.
        assert!(matches!(
            s.step(Some("k2"), now, 60, true),
            Step::Fetch(Reason::UnknownKid)
        ));
        s.last_unknown_kid_fetch = Some(now);
        assert!(matches!(
            s.step(Some("k2"), now + 59, 60, true),
            Step::Unknown
        ));
        assert!(matches!(
            s.step(Some("k2"), now + 60, 60, true),
            Step::Fetch(Reason::UnknownKid)
        ));
        // A waiter never fetches again.
        assert!(matches!(
            s.step(Some("k2"), now + 60, 60, false),
            Step::Unknown
        ));

        // Past max-age: refetch; if that failed, stale keys carry on during the backoff.
        let later = now + 200;
        assert!(matches!(
            s.step(Some("k1"), later, 60, true),
            Step::Fetch(Reason::Expiry)
        ));
        s.retry_not_before = later + 60;
        assert!(matches!(s.step(Some("k1"), later, 60, true), Step::Hit(_)));
        assert!(matches!(
            s.step(Some("k2"), later, 60, true),
            Step::Unavailable(_)
        ));
        assert!(matches!(
            s.step(Some("k1"), later + 60, 60, true),
            Step::Fetch(Reason::Expiry)
        ));

        // Past the grace period nothing verifies.
        let much_later = now + 100 + STALE_GRACE;
        s.retry_not_before = much_later + 60;
        assert!(matches!(
            s.step(Some("k1"), much_later, 60, true),
            Step::Fetch(Reason::Expiry)
        ));
        assert!(matches!(
            s.step(Some("k1"), much_later, 60, false),
            Step::Unavailable(_)
        ));
    }
}
